"""Collecting trained models' artifacts into tables (notebooks 02-04).

Everything here reads the artifact folders written by
:func:`mer_lib.training.train_system` (``metrics.json``, ``history.csv``,
``cost.json``, ``config.json``) and returns tidy pandas DataFrames.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mer_lib import artifacts
from mer_lib.constants import EMOTIONS, MIDLEVEL
from mer_lib.errors import MerError
from mer_lib.models import MERModel
from mer_lib.profiles import Profile, get_profile


def train_systems(prepared, systems: Sequence[str], profile: str | Profile, run_dir: str | os.PathLike,
                  device=None, progress: bool = True, **train_kw) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every system for every seed of the profile.

    Returns
    -------
    dict
        ``(system, seed) -> artifact folder``.
    """
    from mer_lib.training import train_system

    profile = get_profile(profile)
    jobs = [(s, seed) for s in systems for seed in profile.train.seeds]
    out = {}
    for system, seed in tqdm(jobs, desc="models", disable=not progress):
        out[(system, seed)] = train_system(prepared, system, seed, profile, run_dir, device=device,
                                           progress=False, **train_kw)
    return out


def train_all(prepared, profile: str | Profile, run_dir: str | os.PathLike,
              systems: Sequence[str] = ("A2E", "A2B2E", "A2M2E", "aA2E", "aA2B2E"), device=None,
              progress: bool = True) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every listed system for every seed, adversarial ones included.

    aA2E and aA2B2E get the profile's paper-mode adversary
    (:func:`mer_lib.adversarial.adversarial_training`); the others train normally.
    """
    from mer_lib.adversarial import adversarial_training
    from mer_lib.models import system_spec

    out: dict[tuple[str, int], Path] = {}
    plain = [s for s in systems if not system_spec(s).adversarial]
    adversarial = [s for s in systems if system_spec(s).adversarial]
    if plain:
        out.update(train_systems(prepared, plain, profile, run_dir, device, progress))
    if adversarial:
        step, config = adversarial_training(profile)
        out.update(train_systems(prepared, adversarial, profile, run_dir, device, progress,
                                 adversarial_step=step, adversarial_config=config))
    return {key: out[key] for key in sorted(out, key=lambda k: (list(systems).index(k[0]), k[1]))}


def _records(dirs: dict[tuple[str, int], Path], name: str) -> Iterable[tuple[str, int, dict]]:
    for (system, seed), path in dirs.items():
        file = Path(path) / name
        if not file.exists():
            raise MerError(f"{file}: missing; was the training of {system} seed {seed} finished?")
        yield system, seed, artifacts.read_json(file)


def metrics_table(dirs: dict[tuple[str, int], Path], target: str = "emotions") -> pd.DataFrame:
    """One row per (system, seed, split): ``n``, ``mean_r``, ``mae``, ``rmse``, ``r2``.

    ``target`` is ``"emotions"`` or ``"midlevel"`` (bottleneck units vs the
    mid-level annotations; only bottleneck models have it).
    """
    rows = []
    for system, seed, metrics in _records(dirs, "metrics.json"):
        for split in ("train", "valid", "test"):
            rep = metrics.get(split, {}).get(target)
            if rep is None:
                continue
            rows.append({"system": system, "seed": seed, "split": split,
                         **{k: rep[k] for k in ("n", "mean_r", "mae", "rmse", "r2")}})
    return pd.DataFrame(rows)


def per_target_r(dirs: dict[tuple[str, int], Path], split: str = "test", target: str = "emotions") -> pd.DataFrame:
    """Pearson r per emotion (or mid-level feature): one row per (system, seed, name)."""
    rows = []
    for system, seed, metrics in _records(dirs, "metrics.json"):
        rep = metrics.get(split, {}).get(target)
        if rep is None:
            continue
        rows += [{"system": system, "seed": seed, "target": k, "r": v} for k, v in rep["r"].items()]
    return pd.DataFrame(rows)


def history_table(dirs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """Every epoch of every run, with ``system`` and ``seed`` columns."""
    parts = []
    for (system, seed), path in dirs.items():
        h = pd.read_csv(Path(path) / "history.csv")
        h.insert(0, "seed", seed)
        h.insert(0, "system", system)
        parts.append(h)
    return pd.concat(parts, ignore_index=True)


def cost_table(dirs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """The cost counters of every run (wall time, epochs, forward/backward passes, ...)."""
    return pd.DataFrame([{"system": system, "seed": seed, **cost}
                         for system, seed, cost in _records(dirs, "cost.json")])


def mean_std(df: pd.DataFrame, columns: Sequence[str], by: str = "system", decimals: int = 3) -> pd.DataFrame:
    """``mean ± std`` over seeds (std with ddof=1) of ``columns``, one row per ``by`` value."""
    agg = df.groupby(by, sort=False)[list(columns)].agg(["mean", "std"])
    out = pd.DataFrame(index=agg.index)
    for c in columns:
        out[c] = [f"{m:.{decimals}f} ± {s:.{decimals}f}" for m, s in zip(agg[(c, "mean")], agg[(c, "std")])]
    return out


def bottleneck_weights(model: MERModel) -> pd.DataFrame:
    """The learned mid-level -> emotion weights (7 x 8) of a bottleneck model.

    Because there is no nonlinearity after the bottleneck, these weights (plus
    a bias) *are* the model's explanation: each emotion prediction is this
    linear combination of the 7 bottleneck units.
    """
    if model.bottleneck is None:
        raise MerError(f"{model.system} has no bottleneck")
    w = model.emotion.weight.detach().cpu().numpy().T  # (7, 8)
    return pd.DataFrame(w, index=list(MIDLEVEL), columns=list(EMOTIONS))


def column_correlations(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Pearson r between same-named columns of two aligned tables."""
    common = [c for c in a.columns if c in b.columns]
    return pd.Series({c: float(np.corrcoef(a[c].to_numpy(float), b[c].to_numpy(float))[0, 1]) for c in common})
