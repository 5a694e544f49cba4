"""Collecting trained models' artifacts into tables (notebooks 02-04).

Everything here reads the artifact folders written by
:func:`mer_lib.training.train_system` (``metrics.json``, ``history.csv``,
``cost.json``, ``config.json``) and returns tidy pandas DataFrames.
"""
from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One (system, seed) to train; see :func:`mer_lib.jobs.run_jobs`."""

    prepared: object
    system: str
    seed: int
    profile: Profile
    run_dir: str
    device: str | None


def _adversarial_kw(system: str, profile: Profile) -> dict:
    from mer_lib.adversarial import adversarial_training
    from mer_lib.models import system_spec

    if not system_spec(system).adversarial:
        return {}
    step, config = adversarial_training(profile)
    return {"adversarial_step": step, "adversarial_config": config}


def _train_job(job: TrainJob) -> str:
    from mer_lib.training import train_system

    return str(train_system(job.prepared, job.system, job.seed, job.profile, job.run_dir, device=job.device,
                            progress=False, **_adversarial_kw(job.system, job.profile)))


def train_systems(prepared, systems: Sequence[str], profile: str | Profile, run_dir: str | os.PathLike,
                  device=None, progress: bool = True, workers: int | None = None) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every system for every seed of the profile.

    Finished models are reused; the missing ones are trained as independent
    jobs (:func:`mer_lib.jobs.run_jobs`), by default in one worker process
    per CPU core with one thread each (identical results in-process).
    aA2E and aA2B2E get the profile's paper-mode adversary
    (:func:`mer_lib.adversarial.adversarial_training`).

    Parameters
    ----------
    prepared, profile, run_dir, device
        As for :func:`mer_lib.training.train_system`; the profile also supplies the seeds.
    systems : sequence of str
        Systems to train.
    progress : bool
        Progress bar counting models.
    workers : int, optional
        Worker processes (``0``: in-process; default: one per CPU core, ``$MER_WORKERS``).

    Returns
    -------
    dict
        ``(system, seed) -> artifact folder``, systems in the given order, then by seed.
    """
    from mer_lib.jobs import run_jobs
    from mer_lib.training import trained_dir

    profile = get_profile(profile)
    keys = [(s, seed) for s in systems for seed in profile.train.seeds]
    out: dict[tuple[str, int], Path] = {}
    todo = []
    for system, seed in keys:
        adv = _adversarial_kw(system, profile).get("adversarial_config")
        out[(system, seed)] = trained_dir(prepared, system, seed, profile, run_dir, adv)
        if not (out[(system, seed)] / "metrics.json").exists():
            todo.append((system, seed))
    # the expensive (adversarial) jobs first, so that the workers finish together
    todo.sort(key=lambda k: not _adversarial_kw(k[0], profile))
    device = None if device is None else str(device)
    jobs = [TrainJob(prepared, system, seed, profile, str(run_dir), device) for system, seed in todo]
    paths = run_jobs(_train_job, jobs, workers, names=[f"{s} seed {seed}" for s, seed in todo], desc="models",
                     progress=progress, device=device)
    for key, path in zip(todo, paths):
        out[key] = Path(path)
    return {key: out[key] for key in keys}


def train_all(prepared, profile: str | Profile, run_dir: str | os.PathLike,
              systems: Sequence[str] = ("A2E", "A2B2E", "A2M2E", "aA2E", "aA2B2E"), device=None,
              progress: bool = True, workers: int | None = None) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every listed system for every seed, adversarial ones included.

    Same as :func:`train_systems`; kept as the name the notebooks use for "all five systems".
    """
    return train_systems(prepared, systems, profile, run_dir, device, progress, workers)


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
