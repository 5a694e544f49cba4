"""The attack stage of the pipeline (protocol §6): attack trained models and keep the results.

:func:`attack_model` attacks the test split of one model and writes
``run_dir/attacks/<tag>/<system>/seed<seed>-<hash>/`` (``<tag>``: :attr:`AttackSetting.tag`):

``config.json``     everything the result depends on (hashed into the folder name)
``log.csv``         the published format (:func:`mer_lib.attacks.logs.write_attack_log`)
``attack.csv``      the tidy table (:func:`mer_lib.attacks.engine.attack_table`) with ``system``, ``seed``
``adversarial.npy`` optional: the adversarial inputs ``(N, 1, T, F)`` in ``attack.csv`` order
``checksums.json``  size and SHA-256 of the files above that are present
``summary.json``    written last (its presence marks a finished attack): aggregates, timing, passes

The hash covers the model's weights, the attacked inputs and labels, the standardisation statistics and the
settings that change results. Every file is written atomically. A finished folder is reused unless
:data:`ATTACKS` finds it damaged; then the (deterministic) attack runs again, with a warning naming the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import NamedTuple
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mer_lib import artifacts
from mer_lib.attacks.engine import ATTACK_VERSION, NORM_MODES, NORMS, attack_kind, attack_table, run_attack
from mer_lib.attacks.logs import (
    SUMMARY_FILE,
    abs_errors,
    per_model_metrics,
    read_attack_table,
    require_columns,
    write_attack_log,
)
from mer_lib.config import EMOTIONS, AttackConfig, RunLayout, check_choice, check_eps
from mer_lib.errors import MerError
from mer_lib.jobs import Executor, run_jobs
from mer_lib.models.nets import MERModel, memory_format_name
from mer_lib.models.stage import load_model_dir, split_arrays
from mer_lib.models.train import deterministic_mode, resolve_device


# --------------------------------------------------------------------------
# The attack stage
# --------------------------------------------------------------------------
def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state (names, shapes, dtypes and values of every tensor, CPU bytes)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


class AttackSetting(NamedTuple):
    """One registered attack (:data:`mer_lib.attacks.engine.ATTACKS`) at one radius; make it with :meth:`of`.

    A tuple ``(name, eps)``, so ``("bounded", 0.1)`` and ``AttackSetting("bounded", 0.1)`` are the same dict key.
    """

    name: str
    eps: float | None = None

    @classmethod
    def of(cls, name: str, eps: float | None = None) -> AttackSetting:
        """The setting of attack ``name``: ``eps`` is dropped for an unbounded attack, required and checked otherwise."""
        return cls(name, None if attack_kind(name).radii is None else check_eps(eps))

    @property
    def tag(self) -> str:
        """Its folder name: ``"paper"``, ``"bounded-eps<eps>"`` or ``"bounded-l2-eps<eps>"``."""
        return self.name if self.eps is None else f"{self.name}-eps{self.eps:g}"

    def settings(self, config: AttackConfig) -> dict:
        """The settings that change its results under ``config`` (hashed into its folder name)."""
        return attack_kind(self.name).settings(config, self.eps)


def _load(model_or_dir, device) -> tuple[MERModel, str, int | None]:
    if isinstance(model_or_dir, torch.nn.Module):
        system = getattr(model_or_dir, "system", None)
        if system is None:
            raise MerError("attack_model needs an MERModel (with .system) or a trained model folder")
        return model_or_dir.to(device), system, None
    path = Path(model_or_dir)
    model, metrics = load_model_dir(path, device)
    return model, metrics["system"], int(metrics["seed"])


def _split_data(prepared, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Attacked inputs, their numbers and labels, and the data part of an attack's hashed key."""
    x, y, _ = split_arrays(prepared, split)
    numbers = np.asarray(prepared.numbers(split)).astype(np.int64)
    y_true = prepared.table.loc[numbers, list(EMOTIONS)].to_numpy(np.float64)
    data = {"numbers": numbers.tolist(), "x_sha256": artifacts.array_sha256(np.asarray(x, np.float32)),
            "y_sha256": artifacts.array_sha256(np.asarray(y, np.float32)), "mean": float(prepared.mean),
            "std": float(prepared.std)}
    return x, numbers, y_true, data


def _attack_key(model_sha256: str, system: str, seed: int | None, setting: AttackSetting, config: AttackConfig,
                split: str, data: dict, memory_format: str) -> dict:
    """Everything one attack's result depends on, the model's memory layout included (for bit-identical reruns)."""
    return {"attack_version": ATTACK_VERSION, "attack": setting.settings(config),
            "model_sha256": model_sha256, "model_memory_format": memory_format, "system": system, "seed": seed,
            "split": split, "data": data}


#: The result files of an attack recorded in ``checksums.json`` (those present).
RESULT_FILES = ("log.csv", "attack.csv", "adversarial.npy")
#: An attack's result folder: ``summary.json`` is written last and marks a finished attack.
ATTACKS = artifacts.CachedStage(SUMMARY_FILE, RESULT_FILES[:2], "recomputing the attack")


def _result_dir(run_dir, tag: str, system: str, seed: int | None, digest: str) -> Path:
    return RunLayout(run_dir).attacks / tag / system / (f"seed{seed}-{digest}" if seed is not None else digest)


def attack_model(model_or_dir, prepared, run_dir: str | os.PathLike, mode: str = "paper",
                 config: AttackConfig | None = None, eps: float | None = None, *, split: str = "test",
                 seed: int | None = None, device: str | torch.device | None = None,
                 save_adversarial: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Attack one model on a split and write its logs (reused if already done).

    Parameters
    ----------
    model_or_dir : MERModel or path-like
        A model, or a folder of :func:`mer_lib.models.stage.train_system` (system and seed are read from it).
    prepared : PreparedData
        The run's prepared data (inputs, labels, standardisation statistics).
    mode, eps : str, float or None
        ``"paper"``, ``"bounded"`` or ``"bounded-l2"``; the bounded modes need the radius ``eps``.
    config : AttackConfig, optional
        Default: the paper values.
    seed : int, optional
        Training seed, for the folder name and tables when ``model_or_dir`` is a model.
    save_adversarial, overwrite : bool
        Also write ``adversarial.npy``; recompute even if a finished result exists.

    Returns
    -------
    Path
        The result folder (module docstring).
    """
    config = config or AttackConfig()
    setting = AttackSetting.of(mode, eps)
    tag = setting.tag
    device = resolve_device(device)
    model, system, model_seed = _load(model_or_dir, device)
    seed = model_seed if seed is None else int(seed)
    x, numbers, y_true, data = _split_data(prepared, split)
    key = _attack_key(model_fingerprint(model), system, seed, setting, config, split, data, memory_format_name(model))
    digest = artifacts.config_hash(key)
    out = _result_dir(run_dir, tag, system, seed, digest)
    # a result without the adversarial inputs asked for is computed again
    overwrite = overwrite or (save_adversarial and not (out / "adversarial.npy").exists())

    def compute(out: Path) -> tuple[list[str], dict]:
        y = prepared.table.loc[numbers, list(EMOTIONS)].to_numpy(np.float32)
        t0 = time.perf_counter()
        with deterministic_mode(device):
            result = run_attack(model, x, y, setting.name, config, setting.eps, mean=prepared.mean, std=prepared.std,
                                progress=progress)
        seconds = time.perf_counter() - t0
        tidy = attack_table(result, numbers, y_true)
        write_attack_log(tidy, out / "log.csv")
        full = tidy.copy()
        full.insert(0, "seed", seed if seed is not None else -1)
        full.insert(0, "system", system)
        artifacts.write_text(out / "attack.csv", full.to_csv(index=False))
        if save_adversarial:
            artifacts.write_npy(out / "adversarial.npy", (np.asarray(x, np.float32) + result.delta).astype(np.float32))
        else:
            (out / "adversarial.npy").unlink(missing_ok=True)  # of the result replaced here, unchecked
        return [name for name in RESULT_FILES if (out / name).exists()], {
            **summarise(tidy), "system": system, "seed": seed, "tag": tag, "hash": digest, "seconds": seconds,
            "forward_passes": result.forward_passes, "backward_passes": result.backward_passes,
            "example_iterations": int(result.iterations.sum()), "device": str(device),
            "threads": torch.get_num_threads()}

    record = artifacts.config_record(key, attack_config=dataclasses.asdict(config), tag=tag)
    return ATTACKS.run(out, record, compute, overwrite)


def is_attack_finished(out: str | os.PathLike, need_adversarial: bool = False) -> bool:
    """Whether an attack folder holds an intact finished attack (with ``adversarial.npy`` if ``need_adversarial``).

    A damaged one gives a warning naming the file, and the attack is recomputed.
    """
    return ATTACKS.is_finished(out) and (not need_adversarial or (Path(out) / "adversarial.npy").exists())


def summarise(tidy: pd.DataFrame) -> dict:
    """Aggregates of one attacked model: MAE before/after, dMAE, iterations, norms, SNR, convergence."""
    mae_clean = float(np.mean(abs_errors(tidy, "orig")))
    mae_adv = float(np.mean(abs_errors(tidy, "new")))

    def med(col):
        v = tidy[col].to_numpy(np.float64) if col in tidy else np.array([])
        return float(np.median(v)) if len(v) and not np.isnan(v).all() else None

    return {"n": int(len(tidy)), "mae_clean": mae_clean, "mae_adv": mae_adv, "dmae": mae_adv - mae_clean,
            "iterations_mean": float(tidy["iterations"].mean()), "converged_share": float(tidy["converged"].mean()),
            "l2_median": med("l2"), "linf_median": med("linf"), "snr_db_median": med("snr_db"),
            "db_reference_median": med("db_reference")}


@dataclasses.dataclass(frozen=True)
class AttackJob:
    """One (trained model folder, attack setting) to attack; see :func:`mer_lib.jobs.run_jobs`."""

    model_dir: str
    prepared: object
    run_dir: str
    setting: AttackSetting
    config: AttackConfig
    device: str | None
    kw: tuple = ()


def _attack_job(job: AttackJob) -> str:
    out = attack_model(job.model_dir, job.prepared, job.run_dir, job.setting.name, job.config, job.setting.eps,
                       device=job.device, progress=False, **dict(job.kw))
    return str(out)


def attack_many(model_dirs, prepared, run_dir: str | os.PathLike, settings: Sequence[tuple[str, float | None]],
                config: AttackConfig | None = None, progress: bool = True, executor: Executor | str | int | None = None,
                device: str | torch.device | None = None, **kw) -> dict[AttackSetting, pd.DataFrame]:
    """Attack every trained model folder with every setting; return the tidy rows.

    Finished attacks are reused; the missing ones run as independent jobs (:func:`mer_lib.jobs.run_jobs`: worker
    processes, one CPU thread each, results identical to an in-process run).

    Parameters
    ----------
    model_dirs : dict or sequence
        Trained model folders (e.g. ``{(system, seed): folder}`` from training).
    settings : sequence of AttackSetting or (str, float or None)
        ``("paper", None)``, ``("bounded", eps)``, ``("bounded-l2", eps)`` or another registered attack.
    executor : Executor, str or int, optional
        How the jobs run (:func:`mer_lib.jobs.run_jobs`; default ``$MER_EXECUTOR`` or ``"auto"``: one worker process
        per CPU core, in-process on CUDA).
    **kw
        Passed to :func:`attack_model` (e.g. ``save_adversarial=True``).

    Returns
    -------
    dict
        ``AttackSetting ->`` the ``attack.csv`` rows of every model, with ``result_dir`` and ``model_dir`` columns.
    """
    config = config or AttackConfig()
    items = [str(p) for p in (model_dirs.values() if isinstance(model_dirs, dict) else model_dirs)]
    if not items:
        raise MerError("no models to attack")
    settings = [AttackSetting.of(*setting) for setting in settings]
    dirs: dict[tuple[int, int], Path] = {}
    todo: list[tuple[int, int]] = []
    data = _split_data(prepared, "test")[3]  # where each result goes: hashed once per model, not per job
    models = [_load(item, "cpu") for item in items]
    shas = [model_fingerprint(model) for model, _, _ in models]
    formats = [memory_format_name(model) for model, _, _ in models]
    for i, setting in enumerate(settings):
        for j, (_, system, seed) in enumerate(models):
            key = _attack_key(shas[j], system, seed, setting, config, "test", data, formats[j])
            dirs[(i, j)] = _result_dir(run_dir, setting.tag, system, seed, artifacts.config_hash(key))
            if kw.get("overwrite") or not is_attack_finished(dirs[(i, j)], bool(kw.get("save_adversarial"))):
                todo.append((i, j))
    device = None if device is None else str(device)
    jobs = [AttackJob(items[j], prepared, str(run_dir), settings[i], config, device, tuple(sorted(kw.items())))
            for i, j in todo]
    names = [f"{settings[i].tag} of {items[j]}" for i, j in todo]
    label = ", ".join(setting.tag for setting in settings)
    done_dirs = run_jobs(_attack_job, jobs, executor, names=names, desc=f"attacks ({label})",
                         progress=progress, device=device)
    for (i, j), out in zip(todo, done_dirs):
        dirs[(i, j)] = Path(out)
    tables = {}
    for i, setting in enumerate(settings):
        parts = []
        for j in range(len(items)):
            # damaged after it was (re)computed above: nothing left to recompute here
            ATTACKS.check(dirs[(i, j)], f"delete {dirs[(i, j)]} and rerun to recompute the attack")
            table = read_attack_table(dirs[(i, j)])
            table["result_dir"] = str(dirs[(i, j)])
            table["model_dir"] = items[j]
            parts.append(table)
        tables[setting] = pd.concat(parts, ignore_index=True)
    return tables


def attack_models(model_dirs, prepared, run_dir: str | os.PathLike, mode: str = "paper",
                  config: AttackConfig | None = None, eps: float | None = None, progress: bool = True,
                  executor: Executor | str | int | None = None, device: str | torch.device | None = None,
                  **kw) -> pd.DataFrame:
    """Attack many models with one setting of :func:`attack_many`; return their ``attack.csv`` rows."""
    setting = AttackSetting.of(mode, eps)
    return attack_many(model_dirs, prepared, run_dir, [setting], config, progress, executor, device, **kw)[setting]


def bounded_sweep(model_dirs, prepared, run_dir: str | os.PathLike, config: AttackConfig,
                  eps_values: Sequence[float] | None = None, progress: bool = False,
                  executor: Executor | str | int | None = None, norm: str = "linf",
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """Bounded attacks of many models at several radii (protocol §6.2), run or reused by :func:`attack_many`.

    Parameters
    ----------
    config : AttackConfig
        Bounded-mode settings (steps, update, step size, stopping rule).
    eps_values : sequence of float, optional
        Default: ``config.eps_values`` (L-infinity) or ``config.l2_eps_values`` (L2).
    norm : str
        ``"linf"`` (mode ``"bounded"``) or ``"l2"`` (mode ``"bounded-l2"``).
    model_dirs, prepared, run_dir, progress, executor, device
        As for :func:`attack_many`.

    Returns
    -------
    pandas.DataFrame
        :func:`mer_lib.attacks.logs.per_model_metrics` of every radius, stacked, with ``norm`` and ``eps`` columns.
    """
    check_choice("norm", norm, NORMS)
    mode = NORM_MODES[norm]
    eps_values = tuple(attack_kind(mode).radii(config) if eps_values is None else eps_values)
    if not eps_values:
        raise MerError(f"bounded_sweep: no {norm} eps values")
    settings = [(mode, float(eps)) for eps in eps_values]
    tables = attack_many(model_dirs, prepared, run_dir, settings, config, progress=progress, executor=executor,
                         device=device)
    return pd.concat([per_model_metrics(tables[st]).assign(norm=norm, eps=st[1]) for st in settings],
                     ignore_index=True)


def plateau_check(model_dirs, prepared, run_dir: str | os.PathLike, config: AttackConfig, eps: float | None = None,
                  norm: str = "linf", factor: int = 2, executor: Executor | str | int | None = None,
                  device: str | torch.device | None = None) -> pd.DataFrame:
    """Whether the bounded attack's damage has plateaued: the same attack with ``factor`` x the steps (protocol §6.2).

    The radius ``eps`` defaults to the middle one of the norm's sweep (the upper middle one of an even count); both
    runs use the default step size ``2.5 eps / steps`` (so both can cross the ball); the first is reused from the sweep.

    Returns
    -------
    pandas.DataFrame
        One row per model: ``system``, ``seed``, ``norm``, ``eps``, ``dmae`` and ``dmae_rel`` of both budgets
        (suffixes ``_steps`` and ``_more``) and their ratios ``dmae_ratio`` (more / steps) and ``dmae_rel_ratio``.
    """
    check_choice("norm", norm, NORMS)
    if eps is None:
        radii = sorted(attack_kind(NORM_MODES[norm]).radii(config))
        if not radii:
            raise MerError(f"plateau_check: no {norm} radii in the configuration and no eps given")
        eps = radii[len(radii) // 2]
    if not isinstance(factor, (int, np.integer)) or factor < 2:
        raise MerError(f"plateau_check: factor must be an integer >= 2, got {factor!r}")
    more = dataclasses.replace(config, bounded_steps=int(factor) * config.bounded_steps)
    parts = {name: bounded_sweep(model_dirs, prepared, run_dir, cfg, (eps,), executor=executor, norm=norm,
                                 device=device)
             for name, cfg in (("steps", config), ("more", more))}
    keys = ["system", "seed", "norm", "eps"]
    out = parts["steps"][keys + ["dmae", "dmae_rel"]].merge(
        parts["more"][keys + ["dmae", "dmae_rel"]], on=keys, suffixes=("_steps", "_more"), validate="one_to_one")
    for q in ("dmae", "dmae_rel"):
        out[f"{q}_ratio"] = out[f"{q}_more"] / out[f"{q}_steps"]
    return out.assign(steps=config.bounded_steps, more_steps=more.bounded_steps)


def attack_variants(variants: pd.DataFrame, prepared, run_dir: str | os.PathLike, mode: str = "paper",
                    config: AttackConfig | None = None, eps: float | None = None,
                    executor: Executor | str | int | None = None,
                    device: str | torch.device | None = None) -> pd.DataFrame:
    """Attack model variants that share a (system, seed), e.g. :func:`mer_lib.models.heads.posthoc_heads`' table.

    ``variants`` has one row per model: a ``model_dir`` column and describing columns (``system``, ``seed``, ``head``,
    ``ridge``, ...), kept as they are; the other parameters are :func:`attack_models`'. Returns ``variants`` joined with
    :func:`mer_lib.attacks.logs.per_model_metrics` of each variant's attack (``system`` and ``seed`` from the table).
    """
    require_columns(variants, ["model_dir", "system", "seed"], "model variants")
    rows = attack_models(list(variants["model_dir"]), prepared, run_dir, mode, config, eps, progress=False,
                         executor=executor, device=device)
    metrics = [per_model_metrics(g).drop(columns=["system", "seed"]).assign(model_dir=folder)
               for folder, g in rows.groupby("model_dir", sort=False)]
    return variants.merge(pd.concat(metrics, ignore_index=True), on="model_dir", how="left", validate="one_to_one")
