"""Configuration of the whole study: names, fixed facts, run profiles and every ``*Config``.

This is the root of the library: every other module may import it, it imports
nothing of the library but :mod:`mer_lib.errors`.

One set of notebooks runs at four sizes (protocol §8), chosen by the papermill
parameter ``profile``:

``paper``
    The reference protocol unchanged (real data, full model, 199 epochs, ...).
    Meant for a GPU.
``paper-synthetic``
    The same protocol on the embedded synthetic dataset: the whole study at
    full size without the datasets (a GPU's smoke test of the real study).
``quick`` (default)
    The embedded synthetic dataset and the whole protocol scaled down so that
    the full notebook sequence runs in minutes on a 2-core CPU.
``smoke``
    The smallest run that still exercises every code path; used by tests.

Every value is a field of the frozen dataclasses below, so it is visible in
the notebooks (``profile.as_table()``) and in every artifact's configuration.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib.errors import MerError

#: The 8 emotion ratings of the Soundtracks dataset, in the published logs' order.
EMOTIONS: tuple[str, ...] = (
    "valence", "energy", "tension", "anger", "fear", "happy", "sad", "tender",
)


#: The 7 mid-level perceptual features (Aljanaki & Soleymani 2018), in file order.
MIDLEVEL: tuple[str, ...] = (
    "melodiousness", "articulation", "rhythm_complexity", "rhythm_stability",
    "dissonance", "tonal_stability", "minorness",
)


#: Valid range of the raw (undivided) ratings.
EMOTION_RANGE: tuple[float, float] = (1.0, 9.0)


MIDLEVEL_RANGE: tuple[float, float] = (1.0, 10.0)


#: Targets are divided by this factor before training (protocol §2.1).
TARGET_SCALE: float = 10.0


#: Systems of the study, in the order of the paper's Figure 3.
SYSTEMS: tuple[str, ...] = ("A2E", "aA2E", "A2B2E", "aA2B2E", "A2M2E")


@dataclass(frozen=True)
class AttackConfig:
    """Attack and adversarial-training settings (paper values by default).

    Attributes
    ----------
    lr : float
        Adam learning rate of the paper-mode test-set attack (reference: 0.002).
    max_iters : int
        Paper-mode iteration budget of the test-set attack (reference: 1000).
    adv_train_iters : int
        Paper-mode iterations of the adversary inside adversarial training (reference: 50).
    adv_train_lr : float
        Adam learning rate of that adversary (reference: 0.002). With few
        iterations the paper's rate leaves ``best`` at zero (the threshold is
        not crossed again), so scaled-down profiles scale it up.
    adv_every : int
        Adversarial updates happen in epochs that are multiples of this (reference: 5).
    eps_values : tuple of float
        L-infinity radii of the bounded-mode sweep (normalised-spectrogram units).
    l2_eps_values : tuple of float
        L2 radii of the ``"bounded-l2"`` sweep (normalised-spectrogram units, the
        norm of the whole 313 x 149 excerpt). An L-infinity perturbation that
        uses its radius ``e`` in every bin has L2 norm ``e * sqrt(313 * 149)``,
        about ``216 e``: the defaults are the L-infinity defaults x 200, rounded.
        The published paper-mode perturbations end at median L2 norms of 18-22
        (A2E, A2B2E, A2M2E) and 51-56 (adversarially trained systems).
    bounded_steps : int
        Iteration budget of bounded mode.
    bounded_update : str
        ``"sign"`` (PGD: ``delta += step_size * sign(grad)``) or ``"adam"``
        (the paper's signed Adam step with learning rate ``lr``).
    bounded_step_size : float or None
        Step of the ``"sign"`` update; ``None``: :func:`mer_lib.attacks.engine.default_step_size`.
    bounded_stop : str
        ``"fixed"`` (run every step, return the final iterate) or
        ``"correlation"`` (the paper's stopping rule, return the best iterate).
    batch_size : int
        Excerpts attacked together by the engine (memory vs speed only; results
        do not depend on it beyond float rounding).
    db_reference : bool
        Also compute the reference's pseudo-SNR (slow: ~10 s per excerpt).
    channels_last : bool
        Feed the model channels-last inputs (as in training).
    """

    lr: float = 0.002
    max_iters: int = 1000
    adv_train_iters: int = 50
    adv_train_lr: float = 0.002
    adv_every: int = 5
    eps_values: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    l2_eps_values: tuple[float, ...] = (2.0, 6.0, 20.0, 60.0)
    bounded_steps: int = 100
    bounded_update: str = "sign"
    bounded_step_size: float | None = None
    bounded_stop: str = "fixed"
    batch_size: int = 36
    db_reference: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        for name in ("max_iters", "adv_train_iters", "adv_every", "bounded_steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise MerError(f"AttackConfig.{name} must be a positive integer, got {value!r}")
        for name in ("lr", "adv_train_lr"):
            value = getattr(self, name)
            if not is_positive_number(value):
                raise MerError(f"AttackConfig.{name} must be a positive number, got {value!r}")
        check_choice("bounded_update", self.bounded_update, ("sign", "adam"))
        check_choice("bounded_stop", self.bounded_stop, ("fixed", "correlation"))
        for eps in self.eps_values + self.l2_eps_values:
            check_eps(eps)
        if self.bounded_step_size is not None and not (self.bounded_step_size > 0):
            raise MerError(f"AttackConfig.bounded_step_size must be positive or None, got {self.bounded_step_size!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`MerError` naming ``name`` and the allowed values unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise MerError(f"{name} must be one of {list(choices)}, got {value!r}")


def is_positive_number(value: object) -> bool:
    """A finite real number > 0 (Python or numpy int/float; ``bool`` is not a number here)."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value) and value > 0)


def check_eps(eps: float) -> float:
    """``eps`` as a float, or :class:`MerError` unless it is a positive finite number (an attack radius)."""
    if not is_positive_number(eps):
        raise MerError(f"eps must be a positive number, got {eps!r}")
    return float(eps)


@dataclass(frozen=True)
class DataConfig:
    """Where the audio and ratings come from.

    Attributes
    ----------
    source : str
        ``"synthetic"`` (generate the embedded dataset into the run directory)
        or ``"real"`` (read Soundtracks + Mid-level from ``data_dir``).
    n_excerpts : int
        Number of synthetic excerpts (the real Set 1 has 360).
    duration_s : float
        Mean length of a synthetic excerpt in seconds.
    synth_seed : int
        Seed of the synthetic generator.
    """

    source: str = "synthetic"
    n_excerpts: int = 360
    duration_s: float = 12.0
    synth_seed: int = 2025


@dataclass(frozen=True)
class FeatureConfig:
    """Front end and preprocessing (protocol §3).

    Attributes
    ----------
    sample_rate, fps, frame_size, bands_per_octave, fmin, fmax, fref
        madmom's ``LogarithmicFilteredSpectrogram`` parameters.
    excerpt_frames : int
        Length of the excerpt cut from every file (313 frames = 10 s).
    offset_seed : int
        Seed of the once-chosen random excerpt offsets (reference: 42).
    stats_split : str
        Files the global mean/std are computed on: ``"all"`` (the reference,
        test excerpts included) or ``"train"``.
    """

    sample_rate: int = 22050
    fps: float = 31.3
    frame_size: int = 2048
    """madmom's spectrogram: sample rate (Hz), frame rate (frames/s), frame and FFT size (samples)."""
    bands_per_octave: int = 24
    fmin: float = 20.0
    fmax: float = 16000.0
    fref: float = 440.0
    """Its logarithmic filterbank: bands per octave, lowest and highest frequency, reference pitch (Hz)."""
    excerpt_frames: int = 313
    offset_seed: int = 42
    stats_split: str = "all"


# The reference front end (protocol §3) is FeatureConfig's defaults; the module constants below
# name them for the code that needs one value (mer_lib.data.frontend's defaults, plots, attacks).
_REFERENCE_FEATURES = FeatureConfig()
#: Audio sample rate of the whole pipeline (Hz), madmom's frame rate (frames/s), frame and FFT size.
SAMPLE_RATE, FPS, FRAME_SIZE = _REFERENCE_FEATURES.sample_rate, _REFERENCE_FEATURES.fps, _REFERENCE_FEATURES.frame_size
#: Logarithmic filterbank: bands per octave, lowest and highest frequency (Hz), reference pitch (Hz).
BANDS_PER_OCTAVE, FMIN, FMAX, FREF = (_REFERENCE_FEATURES.bands_per_octave, _REFERENCE_FEATURES.fmin,
                                      _REFERENCE_FEATURES.fmax, _REFERENCE_FEATURES.fref)
#: Excerpt length in frames (10 s at 31.3 fps) and number of bands of the reference filterbank.
EXCERPT_FRAMES, NUM_BANDS = _REFERENCE_FEATURES.excerpt_frames, 149


@dataclass(frozen=True)
class SplitConfig:
    """Train/validation/test split (protocol §4)."""

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42


#: Mixed-precision modes of training (:attr:`TrainConfig.amp`).
AMP_MODES: tuple[str, ...] = ("off", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Model and training (protocol §5).

    Attributes
    ----------
    width : float
        Channel multiplier of the VGG-style backbone (1.0 = the paper's 64..512).
    max_epochs : int
        Epoch budget (reference: 199).
    patience : int
        Early-stopping patience in epochs on the validation score (reference: 50).
    lr : float
        Adam learning rate.
    batch_size : int
        Training batch size (shuffled, last partial batch dropped).
    seeds : tuple of int
        Training seeds; every system is trained once per seed.
    val_drop_last : bool
        Reference quirk: validation batches of ``batch_size`` with the last
        partial batch dropped (32 of 36 excerpts are scored). Only the paper
        profile reproduces it.
    midlevel_loss_weight : float
        ``w`` of A2M2E's loss ``(1 - w) * emotion MSE + w * mid-level MSE``
        (reference: 0.5). A2E and A2B2E use the emotion MSE only.
    score_unsupervised_bottleneck : bool
        Reference quirk: the validation score of A2B2E (and aA2B2E) also adds
        the mean r of its *unsupervised* bottleneck units with the mid-level
        features, as for A2M2E. ``False`` scores A2B2E on the emotions only.
    channels_last : bool
        Run the convolutions in channels-last memory layout (1.1x faster
        training on this 2-core CPU at width 0.125, ``benchmarks/``); changes
        results only at float-rounding level, but is part of the configuration
        so that reruns stay bit-identical.
    refit_head : bool
        After training, replace every linear head layer that has a target
        (A2M2E's bottleneck, every emotion layer) by its ridge least-squares
        solution on the clean training excerpts, backbone frozen
        (:mod:`mer_lib.models.refit` says why and what it measured).
        Not in the reference protocol: off in the ``paper`` profile, on in the
        scaled-down profiles, whose 10 epochs leave that layer unconverged.
    refit_ridge : float
        Relative L2 penalty of that refit
        (:func:`mer_lib.models.refit.least_squares_layer`); keeps the refit
        layer's weights at the size of a trained one.
    deterministic : bool
        Deterministic algorithms, no cuDNN autotuning: reruns are
        bit-identical (the default in every profile). ``False`` lets cuDNN
        time and pick the fastest convolution algorithms
        (``cudnn.benchmark``) and allows non-deterministic kernels: a GPU
        speed option, recorded in the model's configuration.
    amp : str
        ``"off"`` (float32, the default) or ``"bf16"``: training forward
        passes under bfloat16 autocast (a GPU speed option; evaluation and
        attacks stay in float32).

    ``deterministic`` and ``amp`` enter a model's configuration hash only when
    they leave their defaults, so models trained before they existed keep
    their keys.
    """

    width: float = 1.0
    max_epochs: int = 199
    patience: int = 50
    lr: float = 5e-4
    batch_size: int = 8
    seeds: tuple[int, ...] = (6, 21, 42, 796, 950, 2025, 2324, 2451, 3100, 7192)
    val_drop_last: bool = True
    midlevel_loss_weight: float = 0.5
    score_unsupervised_bottleneck: bool = True
    channels_last: bool = True
    refit_head: bool = False
    refit_ridge: float = 0.01
    deterministic: bool = True
    amp: str = "off"

    def __post_init__(self) -> None:
        check_choice("TrainConfig.amp", self.amp, AMP_MODES)
        if not isinstance(self.deterministic, bool):
            raise MerError(f"TrainConfig.deterministic must be True or False, got {self.deterministic!r}")


#: Fields of :class:`TrainConfig` that enter a model's configuration hash only when they differ from these
#: defaults (they were added after models had been trained; their defaults reproduce those models exactly).
TRAIN_HASH_OPTIONAL: dict[str, object] = {"deterministic": True, "amp": "off"}


@dataclass(frozen=True)
class Profile:
    """A complete, named run configuration."""

    name: str
    description: str
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)

    def to_dict(self) -> dict:
        """Plain nested dict of every value."""
        return dataclasses.asdict(self)

    def as_table(self) -> pd.DataFrame:
        """Every value as a ``section / parameter / value`` table (for notebooks)."""
        rows = []
        for section in ("data", "features", "split", "train", "attack"):
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                rows.append({"section": section, "parameter": key, "value": str(value)})
        return pd.DataFrame(rows)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        description="The reference protocol unchanged, on the real Soundtracks + Mid-level data (GPU; hours).",
        data=DataConfig(source="real"),
    ),
    "paper-synthetic": Profile(
        name="paper-synthetic",
        description="The reference protocol and model unchanged (width 1.0, 199 epochs, 10 seeds, 1000-iteration "
                    "attacks, adversarial training) on the embedded synthetic dataset: the whole study without the "
                    "datasets, for a GPU (docs/running.md: one GPU, several, a Ray cluster).",
        data=DataConfig(source="synthetic", n_excerpts=360, duration_s=12.0),
    ),
    "quick": Profile(
        name="quick",
        description="Default: the embedded synthetic dataset (360 excerpts of ~12 s), protocol scaled down "
                    "to minutes on a 2-core CPU.",
        data=DataConfig(source="synthetic", n_excerpts=360, duration_s=12.0),
        # 5 of the paper's 10 seeds: the fewest at which a median's bootstrap interval over the models (the
        # sample range) covers 94 % (4: at most 88 %); each seed costs about 155 s of the run on 2 cores
        train=TrainConfig(width=0.125, max_epochs=10, patience=10, lr=4e-3, seeds=(6, 21, 42, 796, 950),
                          val_drop_last=False, refit_head=True),
        # paper mode: 10 steps at lr 0.02, the setting of a grid (lr 0.01/0.02/0.04 x 10/20 steps, chosen on
        # perturbation norms alone, protocol §8) whose plain systems end nearest the published runs' median
        # L2 norms (18-22); adversarial training's 5 x 0.02 matches its 50 x 0.002 (measured on quick models)
        attack=AttackConfig(lr=0.02, max_iters=10, adv_train_iters=5, adv_train_lr=0.02, adv_every=5,
                            eps_values=(0.03, 0.1, 0.3), l2_eps_values=(2.0, 6.0, 20.0), bounded_steps=8),
    ),
    "smoke": Profile(
        name="smoke",
        description="Smallest run exercising every code path (tests): 30 synthetic excerpts of 9-11 s, "
                    "so some files are shorter than the 10-s excerpt and padded by wrapping.",
        data=DataConfig(source="synthetic", n_excerpts=30, duration_s=10.0),
        train=TrainConfig(width=0.0625, max_epochs=3, patience=1, lr=4e-3, seeds=(6, 21), val_drop_last=False,
                          refit_head=True),
        attack=AttackConfig(lr=0.1, max_iters=3, adv_train_iters=2, adv_train_lr=0.05, adv_every=2,
                            eps_values=(0.1,), l2_eps_values=(20.0,), bounded_steps=3),
    ),
}


DEFAULT_PROFILE = "quick"


def get_profile(name: str | Profile) -> Profile:
    """Look up a profile by name (``"smoke"``, ``"quick"``, ``"paper"``, ``"paper-synthetic"``).

    Raises
    ------
    MerError
        For an unknown name.
    """
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise MerError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}") from None


# --------------------------------------------------------------------------- run-directory layout
class RunLayout:
    """Where each stage writes inside a run directory (one place for every path).

    ::

        <run>/data/soundtracks_synthetic/   the generated dataset (synthetic source)
        <run>/data/cache/                   spectrograms, offsets, standardisation statistics
        <run>/data/dataset.csv              the prepared table (labels, split, frames)
        <run>/models/<system>/seed<k>-<hash>/
        <run>/posthoc/<variant>/seed<k>-<hash>/  trained backbones with heads refit post hoc (ridge sweep, head swap)
        <run>/attacks/<tag>/<system>/seed<k>-<hash>/
        <run>/tables/own/, <run>/tables/published/
        <run>/regression/<section>.csv      values checked by mer_lib.regression
        <run>/notebooks/                    executed notebooks (mer_lib.runner)
        <run>/pipeline_times.json           seconds and peak memory per notebook

    Parameters
    ----------
    root : path-like
        The run directory.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        _set = object.__setattr__  # instances are immutable (see __setattr__)
        _set(self, "root", root)
        _set(self, "synthetic_dataset", root / "data" / "soundtracks_synthetic")
        _set(self, "cache", root / "data" / "cache")
        _set(self, "dataset_table", root / "data" / "dataset.csv")
        _set(self, "models", root / "models")
        _set(self, "posthoc", root / "posthoc")
        _set(self, "attacks", root / "attacks")
        _set(self, "regression", root / "regression")
        _set(self, "notebooks", root / "notebooks")
        _set(self, "times", root / "pipeline_times.json")

    def __repr__(self) -> str:
        return f"RunLayout({str(self.root)!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"RunLayout is immutable: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunLayout) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def tables(self, which: str = "own") -> Path:
        """``<run>/tables/<which>``: ``"own"`` (this run) or ``"published"`` (the authors' logs)."""
        return self.root / "tables" / which
