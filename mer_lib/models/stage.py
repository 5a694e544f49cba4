"""The training stage: train (or reuse) each system x seed of a profile in the run directory.

A model's folder ``<run>/models/<system>/seed<k>-<hash>/`` is keyed by a hash of :func:`run_config` and holds
``model.pt``, ``config.json``, ``history.csv``, ``cost.json``, ``checksums.json`` (size and SHA-256 of
:data:`RECORDED_FILES`), ``metrics.json`` (written last: it marks a finished model) and, while training, the resume
file ``state.pt`` (:data:`MODELS`, a :class:`mer_lib.artifacts.CachedStage`). A damaged finished model is retrained
with a warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from mer_lib import artifacts
from mer_lib.config import (
    EMOTIONS,
    MIDLEVEL,
    SYSTEM_REGISTRY,
    TRAIN_HASH_OPTIONAL,
    Profile,
    RunLayout,
    TrainConfig,
    get_profile,
)
from mer_lib.data.cache import spectrogram_digest
from mer_lib.data.stage import prepare_data
from mer_lib.errors import MerError
from mer_lib.jobs import Executor, run_jobs
from mer_lib.metrics import regression_report
from mer_lib.models.nets import MERModel, build_model, plain_twin, system_spec
from mer_lib.models.refit import refit_head
from mer_lib.models.train import (
    STATE_FILE,
    AdversarialStep,
    Cost,
    TrainResult,
    deterministic_mode,
    predict,
    resolve_device,
    save_torch,
    train_model,
)

#: Bumped whenever a code change alters training results; part of every artifact hash.
TRAINING_VERSION: int = 2
#: The files of a finished model recorded in ``checksums.json`` (``metrics.json`` is written after it).
RECORDED_FILES = ("model.pt", "history.csv", "cost.json")
#: The resume state a plain system (A2E, A2B2E) keeps for its adversarial twin (aA2E, aA2B2E), which
#: trains exactly like it until its first adversarial epoch and therefore starts from this state.
SHARED_STATE = "state-epoch{epoch}.pt"
#: A model folder: ``metrics.json`` is written last and marks a finished model.
MODELS = artifacts.CachedStage("metrics.json", RECORDED_FILES, "retraining the model")


# --------------------------------------------------------------------------
# The pipeline stage: artifacts in the run directory
# --------------------------------------------------------------------------
def split_arrays(prepared, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs ``(N, 1, T, F)``, emotion ``(N, 8)`` and mid-level ``(N, 7)`` targets of a split."""
    numbers = prepared.numbers(split)
    table = prepared.table.loc[numbers]
    return (prepared.excerpts(numbers), table[list(EMOTIONS)].to_numpy(np.float32),
            table[list(MIDLEVEL)].to_numpy(np.float32))


def data_fingerprint(prepared) -> dict:
    """What a trained model depends on in the prepared data, independent of where the run lives.

    Audio, front end, the content of the cached spectrograms (from the cache manifest), standardisation statistics,
    excerpt offsets and length, the split and every target value.
    """
    manifest = artifacts.read_json(Path(prepared.cache_dir) / "manifest.json")
    audio = {name: entry["audio_sha256"] for name, entry in sorted(manifest["files"].items())}
    table = prepared.table.sort_index()
    targets = np.ascontiguousarray(table[list(EMOTIONS) + list(MIDLEVEL)].to_numpy(np.float64))
    return {
        "frontend_hash": manifest["frontend_hash"],
        "audio_hash": artifacts.config_hash(audio),
        "spectrogram_hash": spectrogram_digest(manifest),
        "mean": float(prepared.mean), "std": float(prepared.std),
        "excerpt_frames": int(prepared.excerpt_frames),
        "offsets_hash": artifacts.config_hash({int(n): int(o) for n, o in table["offset"].items()}),
        "split_hash": artifacts.config_hash({s: [int(n) for n in prepared.numbers(s)]
                                             for s in ("train", "valid", "test")}),
        "targets_sha256": hashlib.sha256(targets.tobytes()).hexdigest(),
        "n_excerpts": int(len(table)),
    }


def run_config(system: str, seed: int, train: TrainConfig, data: dict,
               adversarial: dict | None = None) -> dict:
    """The hashed configuration of one trained model (system, seed, training settings, data fingerprint, adversary).

    ``train.seeds`` is left out, the seed itself is in; the speed options of :data:`mer_lib.config.TRAIN_HASH_OPTIONAL`
    count only where they leave their defaults.
    """
    train_values = {k: v for k, v in dataclasses.asdict(train).items()
                    if k != "seeds" and not (k in TRAIN_HASH_OPTIONAL and v == TRAIN_HASH_OPTIONAL[k])}
    return {"training_version": TRAINING_VERSION, "system": system, "seed": int(seed),
            "train": train_values, "data_hash": artifacts.config_hash(data), "data": data,
            "adversarial": adversarial}


def model_dir(run_dir: str | os.PathLike, config: dict) -> Path:
    """``run_dir/models/<system>/seed<seed>-<confighash>``."""
    return (RunLayout(run_dir).models / config["system"]
            / f"seed{config['seed']}-{artifacts.config_hash(config)}")


def model_config(prepared, system: str, seed: int, profile: Profile,
                 adversarial_config: dict | None = None) -> dict:
    """:func:`run_config` of (system, seed) under a profile; ``adversarial_config`` counts for aA2E / aA2B2E only."""
    return run_config(system, seed, profile.train, data_fingerprint(prepared),
                      adversarial_config if system_spec(system).adversarial else None)


def final_metrics(model: MERModel, arrays: dict, device: torch.device, cost: Cost) -> dict:
    """Regression metrics on every excerpt of each split (the per-split part of ``metrics.json``).

    ``arrays`` maps ``split -> (x, y, m)`` (:func:`split_arrays`); the forward passes are counted in ``cost``. Returns
    ``split -> {"emotions": report, "midlevel": report}`` (:func:`mer_lib.metrics.regression_report`; ``midlevel`` for
    bottleneck models only).
    """
    out = {}
    for split, (x, y, m) in arrays.items():
        emo, bott = predict(model, x, device)
        cost.eval_forward += len(x)
        out[split] = {"emotions": regression_report(y, emo, EMOTIONS)}
        if bott is not None:
            out[split]["midlevel"] = regression_report(m, bott, MIDLEVEL)
    return out


def trained_dir(prepared, system: str, seed: int, profile: str | Profile, run_dir: str | os.PathLike,
                adversarial_config: dict | None = None) -> Path:
    """The artifact folder :func:`train_system` uses for (system, seed), without training."""
    return model_dir(run_dir, model_config(prepared, system, seed, get_profile(profile), adversarial_config))


def train_system(prepared, system: str, seed: int, profile: str | Profile, run_dir: str | os.PathLike,
                 device: str | torch.device | None = None, progress: bool = True,
                 adversarial_step: AdversarialStep | None = None, adversarial_config: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Train (or reuse) one (system, seed) of a profile and write its artifacts.

    An adversarially trained system starts from the state its plain twin kept, if there is one (protocol §5).

    Parameters
    ----------
    prepared : PreparedData
        The run's prepared data (:func:`mer_lib.data.stage.prepare_data`).
    profile : str or Profile
        Supplies the :class:`TrainConfig`.
    adversarial_step : AdversarialStep, optional
        Required for, and only for, aA2E / aA2B2E (:class:`mer_lib.attacks.adversarial_training.PaperAdversary`).
    adversarial_config : dict, optional
        The attack settings of ``adversarial_step``; hashed into the artifact.
    overwrite : bool
        Retrain even if a finished artifact exists.

    Returns
    -------
    Path
        The artifact folder (module docstring). ``metrics.json``'s ``head_refit`` is the record of
        :func:`mer_lib.models.refit.refit_head` if the profile refits heads, else None.
    """
    profile = get_profile(profile)
    if system_spec(system).adversarial != (adversarial_step is not None):
        raise MerError(f"{system}: an adversarial_step is required for, and only for, aA2E and aA2B2E")
    config = model_config(prepared, system, seed, profile, adversarial_config)
    out = model_dir(run_dir, config)
    device = resolve_device(device)

    def compute(out: Path) -> tuple[tuple[str, ...], dict]:
        if overwrite:
            (out / STATE_FILE).unlink(missing_ok=True)
        arrays = {s: split_arrays(prepared, s) for s in ("train", "valid", "test")}
        started_from = _start_from_twin(config, run_dir, out / STATE_FILE, adversarial_step, profile)
        result = train_model(system, *arrays["train"], *arrays["valid"], profile.train, seed, device=device,
                             state_path=out / STATE_FILE, progress=progress, adversarial_step=adversarial_step,
                             hooks=_keep_for_twin(system, out, profile))
        t0 = time.perf_counter()
        with deterministic_mode(device):
            refit = None
            if profile.train.refit_head:
                refit = refit_head(result.model, *arrays["train"], profile.train.refit_ridge, device)
                result.cost.eval_forward += refit["emotion"]["n"]
            metrics = final_metrics(result.model, arrays, device, result.cost)
        final_seconds = time.perf_counter() - t0
        metrics.update({"system": system, "seed": int(seed), "config_hash": artifacts.config_hash(config),
                        "best_epoch": result.best_epoch,
                        "best_valid_score": result.best_score if math.isfinite(result.best_score) else None,
                        "epochs_run": result.epochs_run, "head_refit": refit})
        save_torch(out / "model.pt", {k: v.cpu().contiguous() for k, v in result.model.state_dict().items()})
        artifacts.write_text(out / "history.csv", result.history.to_csv(index=False))
        artifacts.write_json(out / "cost.json", {**_cost_record(result, final_seconds, device),
                                                 "started_from": started_from})
        (out / STATE_FILE).unlink(missing_ok=True)
        return RECORDED_FILES, metrics

    return MODELS.run(out, artifacts.config_record(config, profile=profile.name), compute, overwrite)


def _keep_for_twin(system: str, out: Path, profile: Profile) -> tuple:
    """The hook that copies the resume state at the end of the last epoch an adversarial twin shares."""
    epoch = profile.attack.adv_every - 1
    if epoch < 1 or not any(plain_twin(other) == system for other in SYSTEM_REGISTRY):
        return ()

    def keep(end) -> None:
        if end.epoch == epoch:
            artifacts.write_bytes(out / SHARED_STATE.format(epoch=epoch), (out / STATE_FILE).read_bytes())
    return (keep,)


def _start_from_twin(config: dict, run_dir, state_path: Path, adversarial_step, profile: Profile) -> str | None:
    """Copy the plain twin's kept state to ``state_path`` (protocol §5); its name for ``cost.json``, or ``None``."""
    twin = plain_twin(config["system"])
    active = getattr(adversarial_step, "active", None)
    if twin is None or active is None or state_path.exists():
        return None
    first = next((e for e in range(1, profile.train.max_epochs + 1) if active(e)), None)
    if first is None or first < 2:
        return None
    source = model_dir(run_dir, {**config, "system": twin, "adversarial": None}) / SHARED_STATE.format(epoch=first - 1)
    if not source.exists():
        return None
    artifacts.write_bytes(state_path, source.read_bytes())
    return f"{twin}/{source.parent.name}/{source.name}"


def _cost_record(result: TrainResult, final_seconds: float, device: torch.device) -> dict:
    """The contents of ``cost.json``: compute counters, wall times and where the model was trained."""
    return {**result.cost.as_dict(), "wall_seconds": result.seconds + final_seconds,
            "train_loop_seconds": result.seconds, "final_eval_seconds": final_seconds,
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "sessions": result.sessions, "device": str(device),
            "threads": torch.get_num_threads(),
            "mean_epoch_seconds": float(result.history["seconds"].mean())}


def is_finished(path: str | os.PathLike) -> bool:
    """Whether a model folder holds an intact finished model (a damaged one: warning, retrained)."""
    return MODELS.is_finished(path)


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MERModel, dict]:
    """Load a finished artifact folder: ``(model in eval mode, metrics dict)``.

    The weights are laid out as in training (channels-last if ``TrainConfig.channels_last``), so every stage runs the
    training's kernels.

    Raises
    ------
    MerError
        If the folder holds no finished model, or a damaged one (naming the file).
    """
    path = MODELS.check(path, "rerun the training (notebooks 02/03 or train_system) to retrain it")
    config = artifacts.read_json(path / "config.json")["config"]
    model = build_model(config["system"], config["train"]["width"])
    model.load_state_dict(artifacts.read_torch(path / "model.pt", hint="rerun the training to retrain it"))
    if config["train"].get("channels_last", True):
        model = model.to(memory_format=torch.channels_last)
    model.to(resolve_device(device)).eval()
    return model, artifacts.read_json(path / "metrics.json")


def load_trained(run_dir: str | os.PathLike, system: str, seed: int, profile: str | Profile,
                 prepared=None, data_dir: str | os.PathLike | None = None,
                 adversarial_config: dict | None = None,
                 device: str | torch.device = "cpu") -> tuple[MERModel, dict]:
    """Load the model of (system, seed) trained with the profile's settings on the run's data.

    ``prepared`` defaults to :func:`mer_lib.data.stage.prepare_data` with ``data_dir`` (it reuses the cache);
    ``adversarial_config`` is the attack setting aA2E / aA2B2E were trained with.

    Returns
    -------
    model, metrics : MERModel, dict
        The model in eval mode and the contents of ``metrics.json``.

    Raises
    ------
    MerError
        If that model has not been trained yet.
    """
    profile = get_profile(profile)
    if prepared is None:
        prepared = prepare_data(profile, run_dir, data_dir, progress=False)
    path = model_dir(run_dir, model_config(prepared, system, seed, profile, adversarial_config))
    if not (path / "metrics.json").exists():
        raise MerError(f"no trained {system} model for seed {seed} with the {profile.name!r} settings: "
                       f"expected {path}; train it first (notebooks 02/03 or mer_lib.models.stage.train_system)")
    return load_model_dir(path, device)


#: Makes the adversary of an adversarially trained system from a profile: ``profile -> (step, config)``,
#: e.g. :func:`mer_lib.attacks.adversarial_training.adversarial_training`. A module-level function, so
#: that training jobs can be sent to worker processes.
AdversaryFactory = Callable[[Profile], tuple[AdversarialStep, dict]]


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One (system, seed) to train; see :func:`mer_lib.jobs.run_jobs`."""

    prepared: object
    system: str
    seed: int
    profile: Profile
    run_dir: str
    device: str | None
    adversary: AdversaryFactory | None = None


def _adversarial_kw(system: str, profile: Profile, adversary: AdversaryFactory | None) -> dict:
    if not system_spec(system).adversarial:
        return {}
    if adversary is None:
        raise MerError(f"{system} is adversarially trained: pass an adversary factory (adversary=...), or train it "
                       "with mer_lib.attacks.adversarial_training.train_all")
    step, config = adversary(profile)
    return {"adversarial_step": step, "adversarial_config": config}


def _train_job(job: TrainJob) -> str:
    return str(train_system(job.prepared, job.system, job.seed, job.profile, job.run_dir, device=job.device,
                            progress=False, **_adversarial_kw(job.system, job.profile, job.adversary)))


def train_systems(prepared, systems: Sequence[str], profile: str | Profile, run_dir: str | os.PathLike,
                  device=None, progress: bool = True, executor: Executor | str | int | None = None,
                  adversary: AdversaryFactory | None = None) -> dict[tuple[str, int], Path]:
    """Train (or reuse) every system for every seed of the profile.

    Missing models are trained as independent jobs (:func:`mer_lib.jobs.run_jobs`), by default one worker process per
    CPU core with one thread each (results identical to an in-process run).

    Parameters
    ----------
    prepared, profile, run_dir, device
        As for :func:`train_system`; the profile also supplies the seeds.
    executor : Executor, str or int, optional
        ``"inprocess"``, ``"local[:N]"`` or ``"ray[:ADDRESS]"`` (:func:`mer_lib.jobs.run_jobs`); default
        ``$MER_EXECUTOR`` or ``"auto"`` (in-process on CUDA).
    adversary : AdversaryFactory, optional
        Makes the adversary of aA2E / aA2B2E; required if they are listed
        (:func:`mer_lib.attacks.adversarial_training.train_all` passes the paper's).

    Returns
    -------
    dict
        ``(system, seed) -> artifact folder``, systems in the given order, then by seed.
    """

    profile = get_profile(profile)
    keys = [(s, seed) for s in systems for seed in profile.train.seeds]
    out: dict[tuple[str, int], Path] = {}
    todo = []
    for system, seed in keys:
        adv = _adversarial_kw(system, profile, adversary).get("adversarial_config")
        out[(system, seed)] = trained_dir(prepared, system, seed, profile, run_dir, adv)
        if not is_finished(out[(system, seed)]):
            todo.append((system, seed))
    # the expensive (adversarial) jobs first, so that the workers finish together
    todo.sort(key=lambda k: not system_spec(k[0]).adversarial)
    device = None if device is None else str(device)
    jobs = [TrainJob(prepared, system, seed, profile, str(run_dir), device, adversary) for system, seed in todo]
    paths = run_jobs(_train_job, jobs, executor, names=[f"{s} seed {seed}" for s, seed in todo], desc="models",
                     progress=progress, device=device)
    for key, path in zip(todo, paths):
        out[key] = Path(path)
    return {key: out[key] for key in keys}
