"""Configuration of the whole study: names, fixed facts, run profiles and every ``*Config``.

The root of the library: it imports nothing of it but :mod:`mer_lib.errors`. The papermill parameter ``profile``
picks one of :data:`PROFILES` (protocol §8): ``paper`` (real data, for a GPU), ``paper-synthetic`` (the same protocol
on the synthetic data), ``quick`` (default: scaled down to minutes on a 2-core CPU) or ``smoke`` (tests). Every value
is a field of a frozen dataclass, shown by ``profile.as_table()`` and part of every artifact's configuration.
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


@dataclass(frozen=True)
class SystemInfo:
    """Everything about one system, in one place: its head, how it is trained, where, and its colour.

    ``bottleneck``: the head is ``Linear(D, 7) -> Linear(7, 8)``; ``midlevel_supervised``: the bottleneck
    is trained on the mid-level features; ``adversarial``: trained adversarially (protocol §5);
    ``notebook``: the notebook that trains it; ``color``: its colour in every figure; ``default``: part
    of the study's default set (:data:`SYSTEMS`).
    """

    name: str
    bottleneck: bool
    midlevel_supervised: bool
    adversarial: bool
    notebook: str
    color: str
    default: bool = True


#: The systems, in the order of the paper's Figure 3. A new system is one entry here (and, for a new
#: kind of head or loss, its case in ``mer_lib.models``); re-derive the expectations to check it.
SYSTEM_REGISTRY: dict[str, SystemInfo] = {s.name: s for s in (
    SystemInfo("A2E", bottleneck=False, midlevel_supervised=False, adversarial=False, notebook="02", color="#0173b2"),
    SystemInfo("aA2E", bottleneck=False, midlevel_supervised=False, adversarial=True, notebook="04", color="#56b4e9"),
    SystemInfo("A2B2E", bottleneck=True, midlevel_supervised=False, adversarial=False, notebook="02", color="#d55e00"),
    SystemInfo("aA2B2E", bottleneck=True, midlevel_supervised=False, adversarial=True, notebook="04",
               color="#de8f05"),
    SystemInfo("A2M2E", bottleneck=True, midlevel_supervised=True, adversarial=False, notebook="03", color="#029e73"),
)}

#: The study's default systems, in the order of the paper's Figure 3.
SYSTEMS: tuple[str, ...] = tuple(name for name, s in SYSTEM_REGISTRY.items() if s.default)


def system_info(system: str) -> SystemInfo:
    """The registry entry of a system (``MerError`` for an unknown one)."""
    try:
        return SYSTEM_REGISTRY[system]
    except KeyError:
        raise MerError(f"unknown system {system!r}; expected one of {list(SYSTEM_REGISTRY)}") from None


def systems_trained_in(notebook: str | None = None) -> tuple[str, ...]:
    """The default systems a notebook trains (``"02"``, ...), or all of them in training order (``None``)."""
    chosen = [s for s in SYSTEM_REGISTRY.values() if s.default and (notebook is None or s.notebook == notebook)]
    return tuple(s.name for s in sorted(chosen, key=lambda s: s.notebook))


@dataclass(frozen=True)
class AttackConfig:
    """Attack and adversarial-training settings (protocol §6; the defaults are the ``paper`` profile's).

    Attributes
    ----------
    lr, max_iters : float, int
        Adam learning rate and iteration budget of the paper-mode test-set attack (protocol §6.1).
    adv_train_iters, adv_train_lr : int, float
        Iterations and Adam learning rate of the adversary inside adversarial training (protocol §5); scaled-down
        profiles raise the rate, since few iterations at the paper's rate never cross the threshold again and leave
        ``best`` at zero.
    adv_every : int
        Adversarial updates happen in epochs that are multiples of this.
    eps_values, l2_eps_values : tuple of float
        Radii of the L-infinity and ``"bounded-l2"`` sweeps in normalised-spectrogram units (L2: over the whole
        313 x 149 excerpt; protocol §6.2).
    bounded_steps, bounded_update, bounded_stop : int, str, str
        Bounded mode's iterations; its update, ``"sign"`` (PGD) or ``"adam"`` (the paper's signed Adam step at
        ``lr``); its stop, ``"fixed"`` (final iterate) or ``"correlation"`` (the paper's rule, best iterate).
    bounded_step_size : float or None
        Step of the ``"sign"`` update; ``None``: :func:`mer_lib.attacks.engine.default_step_size`.
    batch_size : int
        Excerpts attacked together (memory vs speed; results do not depend on it beyond float rounding).
    db_reference : bool
        Also compute the reference's pseudo-SNR (slow).

    The model's weights carry the memory layout (``TrainConfig.channels_last``).
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
    """Where the audio and ratings come from (protocol §2).

    Attributes
    ----------
    source : str
        ``"synthetic"`` (generate the embedded dataset into the run directory) or ``"real"`` (read ``data_dir``).
    n_excerpts, duration_s, synth_seed : int, float, int
        Synthetic data: number of excerpts (the real Set 1 has 360), mean length in seconds, generator seed.
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
    excerpt_frames, offset_seed : int
        Length of the excerpt cut from every file (313 frames = 10 s); seed of its once-chosen random offsets.
    stats_split : str
        Files of the global mean/std: ``"all"`` (the reference, test excerpts included) or ``"train"``.
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
    """Model and training (protocol §5; the defaults are the ``paper`` profile's).

    Attributes
    ----------
    width : float
        Channel multiplier of the backbone (1.0 = the paper's 64..512).
    max_epochs, patience, lr, batch_size : int, int, float, int
        Epoch budget; early-stopping patience (epochs); Adam learning rate; batch size (shuffled, last partial dropped).
    seeds : tuple of int
        Training seeds; every system is trained once per seed.
    val_drop_last, score_unsupervised_bottleneck : bool
        Reference quirks: validation scores only full batches (32 of 36 excerpts; off in ``quick`` and ``smoke``);
        A2B2E's validation score also adds its unsupervised units' mean r with the mid-level features.
    midlevel_loss_weight : float
        ``w`` of A2M2E's loss ``(1 - w) * emotion MSE + w * mid-level MSE``.
    channels_last : bool
        Channels-last weights (faster on CPU), set when a model is built or loaded; the one-channel inputs need no
        layout of their own. Part of the configuration: it changes results at float-rounding level.
    refit_head, refit_ridge : bool, float
        Refit every head layer that has a target by ridge regression after training, with this relative penalty
        (protocol §5, :mod:`mer_lib.models.refit`); on in ``quick`` and ``smoke`` only.
    deterministic : bool
        Deterministic algorithms, bit-identical reruns; ``False`` allows cuDNN autotuning and non-deterministic kernels.
    amp : str
        ``"off"`` (float32) or ``"bf16"`` (training forward passes under bfloat16 autocast; evaluation and attacks stay
        float32).

    ``deterministic=False`` and ``amp="bf16"`` are GPU speed options; both fields enter a model's configuration hash
    only when they leave their defaults.
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


#: Fields of :class:`TrainConfig` that enter a model's configuration hash only when they differ from these defaults.
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
        # sample range) keeps its coverage (protocol §7)
        train=TrainConfig(width=0.125, max_epochs=10, patience=10, lr=4e-3, seeds=(6, 21, 42, 796, 950),
                          val_drop_last=False, refit_head=True),
        # paper mode: 10 steps at lr 0.02, chosen so that the plain systems end near the published runs' median
        # L2 norms (protocol §8); adversarial training's 5 x 0.02 stands in for the paper's 50 x 0.002
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
    """The profile of that name (a :class:`Profile` is returned as is); :class:`MerError` for an unknown name."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise MerError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}") from None


# --------------------------------------------------------------------------- run-directory layout
class RunLayout:
    """Where each stage writes inside the run directory ``root`` (one place for every path; protocol §9).

    ::

        <run>/data/soundtracks_synthetic/   the generated dataset (synthetic source)
        <run>/data/cache/                   spectrograms, offsets, standardisation statistics
        <run>/data/dataset.csv              the prepared table (labels, split, frames)
        <run>/models/<system>/seed<k>-<hash>/
        <run>/posthoc/<variant>/seed<k>-<hash>/  trained backbones with heads refit post hoc (ridge sweep, head swap)
        <run>/attacks/<tag>/<system>/seed<k>-<hash>/
        <run>/explanations/<system>/seed<k>-<hash>/  notebook 11's attacked, explained and re-inserted excerpts
        <run>/tables/own/, <run>/tables/published/
        <run>/regression/<section>.csv      values checked by mer_lib.regression
        <run>/listening/                    notebook 01's listening snippets
        <run>/worlds/<name>/                runs of other synthetic worlds (the cue world of notebook 10: its dataset
                                            in dataset/, then the usual layout)
        <run>/notebooks/                    executed notebooks (mer_lib.runner)
        <run>/pipeline_times.json           seconds and peak memory per notebook
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
        _set(self, "explanations", root / "explanations")
        _set(self, "regression", root / "regression")
        _set(self, "listening", root / "listening")
        _set(self, "worlds", root / "worlds")
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
