"""Training of the emotion models (protocol §5), resumable and reproducible.

Two layers:

:func:`train_model`
    The training loop on in-memory arrays (no files needed except an optional
    resume state): Adam, shuffled batches with the last partial batch dropped,
    MSE losses weighted per system, the validation score, early stopping and
    restoring the best weights.
:func:`train_system`
    The pipeline stage: takes the prepared data of a run, trains one
    (system, seed) and writes its artifacts to
    ``run_dir/models/<system>/seed<seed>-<hash>/``; a finished artifact is
    reused, an interrupted one resumed. :func:`load_trained` loads it back.

Protocol (values from :class:`mer_lib.profiles.TrainConfig`):

* losses: A2E, A2B2E (and their adversarial variants) optimise the emotion MSE
  only; A2M2E optimises ``(1 - w) * emotion MSE + w * mid-level MSE`` of the
  bottleneck, ``w = midlevel_loss_weight`` (0.5);
* validation score after every epoch: mean Pearson r over the 8 emotions,
  plus, for every bottleneck model, the mean r of the 7 bottleneck units with
  the 7 mid-level features; for A2B2E (whose units are not trained on them)
  only if ``score_unsupervised_bottleneck`` (the reference's quirk). With ``val_drop_last`` only the first
  ``batch_size * (n // batch_size)`` validation excerpts are scored (the
  reference's loader quirk: 32 of 36);
* early stopping: a score at least as high as the best so far is an
  improvement (ties count, as in the reference; an undefined score counts as
  ``-inf``); training stops once ``patience`` epochs in a row brought none, or
  after ``max_epochs``; the weights of the best epoch are restored;
* final metrics use every excerpt of each split.

Epochs are numbered from 1. Seeding: :func:`seed_everything` seeds torch,
numpy and ``random``; the model is initialised right after it, and the batch
order comes from a separate ``torch.Generator`` seeded with the same seed.
Dropout draws from torch's global RNG. Deterministic algorithms are switched
on while training.

Resuming: with ``state_path`` the loop saves, atomically after every epoch,
everything it needs to continue (model, optimiser, best weights, counters,
history and every RNG state, as tensors, loadable with
``torch.load(weights_only=True)``). A restarted run continues after the last
saved epoch and ends with bit-identical weights and metrics.

Extension point for adversarial training (protocol §5): ``adversarial_step`` is
called after every clean update with ``(model, x_batch, y_batch, epoch,
cost)``; it returns adversarial inputs (or ``None`` to skip, e.g. in epochs
that are not a multiple of 5) and adds the forward/backward passes it spent to
``cost`` (:meth:`Cost.add`). The loop then puts the model in train mode and
takes one more optimiser step on the emotion MSE of the adversarial batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from mer_lib import artifacts
from mer_lib.constants import EMOTIONS, MIDLEVEL
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column, regression_report
from mer_lib.models import MERModel, ModelOutput, SystemSpec, build_model, system_spec
from mer_lib.profiles import Profile, TrainConfig, get_profile

#: Bumped whenever a code change alters training results; part of every artifact hash.
TRAINING_VERSION: int = 1
#: Batch size of inference (does not change results beyond float rounding).
EVAL_BATCH: int = 32
STATE_FILE = "state.pt"


# --------------------------------------------------------------------------
# Devices, seeds, determinism
# --------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; default CUDA if available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MerError(f"invalid device {device!r}: {exc}") from None


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global RNG and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def deterministic_mode(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms (and no cuDNN autotuning) inside the block; restored afterwards."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1:]


def _rng_state() -> dict:
    """Every global RNG state as tensors/ints (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]), "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python_version": int(py_state[0]),
        "python_state": torch.tensor(py_state[1], dtype=torch.int64),
        "python_gauss": py_state[2],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))


# --------------------------------------------------------------------------
# Pure pieces of the loop
# --------------------------------------------------------------------------
@dataclass
class Cost:
    """Compute spent, in examples (a batch of 8 through the model = 8 forward passes).

    Attributes
    ----------
    train_forward, train_backward : int
        Example forward / backward passes of training (clean updates,
        adversarial updates and the attacks that produced them).
    eval_forward : int
        Example forward passes of evaluation (validation, final metrics).
    examples_seen : int
        Clean training examples used for updates.
    optimizer_steps : int
        Optimiser steps (clean and adversarial).
    adversarial_steps : int
        Optimiser steps on adversarial batches.
    """

    train_forward: int = 0
    train_backward: int = 0
    eval_forward: int = 0
    examples_seen: int = 0
    optimizer_steps: int = 0
    adversarial_steps: int = 0

    def add(self, forward: int = 0, backward: int = 0) -> None:
        """Count training forward/backward example passes (for attacks inside training)."""
        self.train_forward += int(forward)
        self.train_backward += int(backward)

    def as_dict(self) -> dict[str, int]:
        """Plain dict of the counters."""
        return dataclasses.asdict(self)


class AdversarialStep(Protocol):
    """Signature of the adversarial-training extension point (see the module docstring)."""

    def __call__(self, model: MERModel, x: torch.Tensor, y: torch.Tensor, epoch: int,
                 cost: Cost) -> torch.Tensor | None: ...


@dataclass
class EpochEnd:
    """What a hook sees at the end of an epoch (after the resume state is saved)."""

    epoch: int
    record: dict
    model: MERModel
    improved: bool
    patience_counter: int
    stop: bool


@dataclass
class TrainResult:
    """Outcome of :func:`train_model`.

    Attributes
    ----------
    model : MERModel
        The model with the best epoch's weights, in eval mode.
    history : pandas.DataFrame
        One row per epoch (see :func:`train_model`).
    best_epoch : int
        Epoch whose weights were restored (1-based).
    best_score : float
        Its validation score.
    epochs_run : int
        Epochs trained.
    stopped_early : bool
        Whether early stopping ended training before ``max_epochs``.
    cost : Cost
        Compute counters.
    seconds : float
        Wall time of the training loop, summed over resumed sessions.
    sessions : int
        1 + the number of times the run was resumed from a saved state.
    """

    model: MERModel
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    cost: Cost
    seconds: float
    sessions: int = 1


def system_loss(spec: SystemSpec, out: ModelOutput, y: torch.Tensor, m: torch.Tensor | None,
                midlevel_weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training loss of a system and its parts.

    Parameters
    ----------
    spec : SystemSpec
        The system (:func:`mer_lib.models.system_spec`).
    out : ModelOutput
        Model output for the batch.
    y : Tensor (B, 8)
        Emotion targets.
    m : Tensor (B, 7) or None
        Mid-level targets (needed for A2M2E; optional otherwise).
    midlevel_weight : float
        ``w`` of A2M2E's ``(1 - w) * emotion MSE + w * mid-level MSE``.

    Returns
    -------
    loss, emotion_mse, midlevel_mse
        ``midlevel_mse`` is the bottleneck-vs-mid-level MSE (``None`` without a
        bottleneck or targets); for A2B2E it is detached and only monitored.
    """
    emo = F.mse_loss(out.emotions, y)
    if out.bottleneck is None or m is None:
        if spec.midlevel_supervised:
            raise MerError("A2M2E needs mid-level targets")
        return emo, emo, None
    if spec.midlevel_supervised:
        ml = F.mse_loss(out.bottleneck, m)
        return (1.0 - midlevel_weight) * emo + midlevel_weight * ml, emo, ml
    with torch.no_grad():
        ml = F.mse_loss(out.bottleneck, m)
    return emo, emo, ml


def validation_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of validation excerpts scored: all, or full batches only (reference quirk)."""
    return (n // batch_size) * batch_size if drop_last else n


def validation_score(y: np.ndarray, emotions: np.ndarray, m: np.ndarray | None = None,
                     bottleneck: np.ndarray | None = None, add_bottleneck: bool = True) -> dict:
    """Validation score and its parts (protocol §5).

    Parameters
    ----------
    y, emotions : array (N, 8)
        Emotion targets and predictions.
    m, bottleneck : array (N, 7), optional
        Mid-level targets and bottleneck activations (bottleneck models).
    add_bottleneck : bool
        Add ``midlevel_r`` to the score (if a bottleneck is given); it is
        computed and returned either way.

    Returns
    -------
    dict
        ``score`` = ``emotion_r`` (mean r over emotions) + ``midlevel_r`` (mean
        r of the bottleneck units, bottleneck models only, else ``nan`` and not
        added); ``emotion_mse``; ``r_<emotion>`` per emotion.
    """
    r = pearson_per_column(y, emotions)
    out = {"emotion_r": float(np.mean(r)), "midlevel_r": float("nan"),
           "emotion_mse": float(np.mean((np.asarray(y, np.float64) - emotions) ** 2))}
    score = out["emotion_r"]
    if bottleneck is not None and m is not None:
        out["midlevel_r"] = float(np.mean(pearson_per_column(m, bottleneck)))
        if add_bottleneck:
            score += out["midlevel_r"]
    out["score"] = score
    out.update({f"r_{name}": float(v) for name, v in zip(EMOTIONS, r)})
    return out


def _to_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=False)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict(model: MERModel, x, device: str | torch.device | None = None,
            batch_size: int = EVAL_BATCH, channels_last: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs in eval mode.

    Parameters
    ----------
    model : MERModel
    x : array or Tensor (N, 1, T, F)
        Standardised inputs.
    device : str or torch.device, optional
        Where to compute (default: the model's device).
    batch_size : int
        Inference batch size.
    channels_last : bool
        Feed inputs in channels-last memory layout (as in training).

    Returns
    -------
    emotions : ndarray (N, 8)
    bottleneck : ndarray (N, 7) or None
    """
    device = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    emo, bott = [], []
    for start in range(0, len(x), batch_size):
        out = model(_to_input(x[start:start + batch_size], device, channels_last))
        emo.append(out.emotions.float().cpu().numpy())
        if out.bottleneck is not None:
            bott.append(out.bottleneck.float().cpu().numpy())
    model.train(was_training)
    e = np.concatenate(emo) if emo else np.zeros((0, len(EMOTIONS)), np.float32)
    return e, (np.concatenate(bott) if bott else None)


def _float_tensor(a) -> torch.Tensor:
    """float32 tensor sharing memory with a writable float32 array, else a copy."""
    if isinstance(a, torch.Tensor):
        return a.float()
    a = np.asarray(a, dtype=np.float32)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _check_arrays(system: str, spec: SystemSpec, x, y, m, split: str) -> tuple:
    x, y = _float_tensor(x), _float_tensor(y)
    if x.ndim != 4 or x.shape[1] != 1:
        raise MerError(f"{split} inputs must have shape (N, 1, T, F), got {tuple(x.shape)}")
    if y.shape != (x.shape[0], len(EMOTIONS)):
        raise MerError(f"{split} emotion targets must have shape ({x.shape[0]}, {len(EMOTIONS)}), "
                       f"got {tuple(y.shape)}")
    if m is None:
        if spec.midlevel_supervised or (spec.bottleneck and split == "valid"):
            raise MerError(f"{system} needs {split} mid-level targets")
        return x, y, None
    m = _float_tensor(m)
    if m.shape != (x.shape[0], len(MIDLEVEL)):
        raise MerError(f"{split} mid-level targets must have shape ({x.shape[0]}, {len(MIDLEVEL)}), "
                       f"got {tuple(m.shape)}")
    return x, y, m


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _nan_to_inf(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


def train_step(model: MERModel, optimizer: torch.optim.Optimizer, spec: SystemSpec, x: torch.Tensor,
               y: torch.Tensor, m: torch.Tensor | None, midlevel_weight: float = 0.5) -> tuple:
    """One optimiser step on a batch (model in train mode); returns :func:`system_loss`'s values."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, emo_mse, ml_mse = system_loss(spec, model(x), y, m, midlevel_weight)
    loss.backward()
    optimizer.step()
    return loss.detach(), emo_mse.detach(), None if ml_mse is None else ml_mse.detach()


def _train_epoch(model: MERModel, optimizer, spec: SystemSpec, config: TrainConfig, x, y, m,
                 perm: torch.Tensor, epoch: int, device: torch.device, cost: Cost,
                 adversarial_step: AdversarialStep | None) -> dict:
    """One pass over the shuffled training batches (last partial batch dropped); mean losses."""
    model.train()
    bs = config.batch_size
    n_batches = len(perm) // bs
    sums = {"loss": 0.0, "emo": 0.0, "ml": 0.0, "adv": 0.0}
    n_ml = n_adv = 0
    for b in range(n_batches):
        idx = perm[b * bs:(b + 1) * bs]
        xb = _to_input(x[idx], device, config.channels_last)
        yb = y[idx].to(device)
        mb = None if m is None else m[idx].to(device)
        loss, emo_mse, ml_mse = train_step(model, optimizer, spec, xb, yb, mb, config.midlevel_loss_weight)
        cost.add(forward=bs, backward=bs)
        cost.examples_seen += bs
        cost.optimizer_steps += 1
        sums["loss"] += loss.item()
        sums["emo"] += emo_mse.item()
        if ml_mse is not None:
            sums["ml"] += ml_mse.item()
            n_ml += 1
        if adversarial_step is None:
            continue
        x_adv = adversarial_step(model, xb, yb, epoch, cost)
        if x_adv is None:
            continue
        model.train()
        optimizer.zero_grad(set_to_none=True)
        adv_loss = F.mse_loss(model(_to_input(x_adv.detach(), device, config.channels_last)).emotions, yb)
        adv_loss.backward()
        optimizer.step()
        cost.add(forward=bs, backward=bs)
        cost.optimizer_steps += 1
        cost.adversarial_steps += 1
        sums["adv"] += adv_loss.item()
        n_adv += 1
    nan = float("nan")
    return {"epoch": epoch, "train_loss": sums["loss"] / n_batches, "train_emotion_mse": sums["emo"] / n_batches,
            "train_midlevel_mse": sums["ml"] / n_ml if n_ml else nan,
            "train_adversarial_mse": sums["adv"] / n_adv if n_adv else nan}


# --------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------
def train_model(system: str, x_train, y_train, m_train, x_valid, y_valid, m_valid,
                config: TrainConfig, seed: int, device: str | torch.device | None = None,
                state_path: str | os.PathLike | None = None, progress: bool = True,
                hooks: Sequence[Callable[[EpochEnd], None]] = (),
                adversarial_step: AdversarialStep | None = None,
                validate: Callable[[MERModel], dict] | None = None) -> TrainResult:
    """Train one model of ``system`` with ``config`` and ``seed``.

    Parameters
    ----------
    system : str
        ``"A2E"``, ``"A2B2E"``, ``"A2M2E"`` (or ``"aA2E"``, ``"aA2B2E"`` with an
        ``adversarial_step``).
    x_train, x_valid : array or Tensor (N, 1, T, F)
        Standardised inputs (kept on the CPU; batches are moved to ``device``).
    y_train, y_valid : array (N, 8)
        Emotion targets (divided by 10).
    m_train, m_valid : array (N, 7) or None
        Mid-level targets; needed by A2M2E (training) and by every bottleneck
        model (validation score); ignored by A2E.
    config : TrainConfig
        Width, epochs, patience, learning rate, batch size, loss weight, ...
    seed : int
        Training seed.
    device : str or torch.device, optional
        Default: CUDA if available, else CPU.
    state_path : path-like, optional
        Resume state file; written after every epoch, resumed from if present.
        The caller deletes it once the results are safely stored.
    progress : bool
        Show a tqdm bar over epochs.
    hooks : sequence of callables
        Called with an :class:`EpochEnd` after every epoch (after the state is
        saved; an exception there leaves a resumable state).
    adversarial_step : AdversarialStep, optional
        Adversarial-training extension point (module docstring).
    validate : callable, optional
        ``model -> dict`` with at least ``"score"``, replacing the validation
        on ``x_valid`` (for tests).

    Returns
    -------
    TrainResult
        History columns: ``epoch``, ``train_loss`` (the optimised loss),
        ``train_emotion_mse``, ``train_midlevel_mse`` (bottleneck vs mid-level,
        monitored only for A2B2E), ``train_adversarial_mse``, ``valid_score``,
        ``valid_emotion_r``, ``valid_midlevel_r``, ``valid_emotion_mse``,
        ``valid_r_<emotion>``, ``best_score``, ``improved``,
        ``patience_counter``, ``seconds``.
    """
    spec = system_spec(system)
    if spec.adversarial and adversarial_step is None:
        raise MerError(f"{system} is trained adversarially: pass an adversarial_step")
    if config.batch_size < 1 or config.max_epochs < 1 or config.patience < 1:
        raise MerError(f"batch_size, max_epochs and patience must be >= 1 (got {config.batch_size}, "
                       f"{config.max_epochs}, {config.patience})")
    x_train, y_train, m_train = _check_arrays(system, spec, x_train, y_train, m_train, "train")
    n_batches = len(x_train) // config.batch_size
    if n_batches == 0:
        raise MerError(f"{len(x_train)} training excerpts do not fill one batch of {config.batch_size}")
    if validate is None:
        x_valid, y_valid, m_valid = _check_arrays(system, spec, x_valid, y_valid, m_valid, "valid")
        n_val = validation_count(len(x_valid), config.batch_size, config.val_drop_last)
        if n_val == 0:
            raise MerError(f"no validation excerpts to score ({len(x_valid)} with batch {config.batch_size}, "
                           f"val_drop_last={config.val_drop_last})")
    device = resolve_device(device)
    cl = config.channels_last
    state_path = Path(state_path) if state_path is not None else None
    cost = Cost()

    with deterministic_mode(device):
        seed_everything(seed)
        model = build_model(system, config.width).to(device)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        order = torch.Generator().manual_seed(seed)

        add_bottleneck = spec.midlevel_supervised or config.score_unsupervised_bottleneck

        def default_validate(mod: MERModel) -> dict:
            emo, bott = predict(mod, x_valid[:n_val], device, channels_last=cl)
            cost.eval_forward += n_val
            return validation_score(y_valid[:n_val].numpy(), emo,
                                    None if m_valid is None else m_valid[:n_val].numpy(), bott,
                                    add_bottleneck=add_bottleneck)

        validate_fn = validate or default_validate
        loop = {"epoch": 0, "best_epoch": 0, "best_score": -math.inf, "counter": 0, "stop": False,
                "seconds": 0.0, "sessions": 1, "history": []}
        best_state = _clone_state(model)
        if state_path is not None and state_path.exists():
            # on the CPU: RNG states must be CPU tensors; the rest is copied to the device below
            saved = torch.load(state_path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])  # moves its state to the parameters' device
            best_state = {k: v.to(device) for k, v in saved["best_state"].items()}
            order.set_state(saved["order_rng"])
            _set_rng_state(saved["rng"])
            loop = saved["loop"]
            loop["sessions"] += 1
            cost = Cost(**saved["cost"])

        with tqdm(total=config.max_epochs, initial=loop["epoch"], disable=not progress,
                  desc=f"{system} seed {seed}", leave=False) as bar:
            while not loop["stop"] and loop["epoch"] < config.max_epochs:
                epoch = loop["epoch"] + 1
                t0 = time.perf_counter()
                record = _train_epoch(model, optimizer, spec, config, x_train, y_train, m_train,
                                      torch.randperm(len(x_train), generator=order), epoch, device,
                                      cost, adversarial_step)
                val = validate_fn(model)
                model.train()
                score = float(val["score"])
                improved = loop["best_epoch"] == 0 or _nan_to_inf(score) >= loop["best_score"]
                if improved:
                    loop["best_epoch"], loop["best_score"], loop["counter"] = epoch, _nan_to_inf(score), 0
                    best_state = _clone_state(model)
                else:
                    loop["counter"] += 1
                loop["stop"] = loop["counter"] >= config.patience
                seconds = time.perf_counter() - t0
                record.update({f"valid_{k}": float(v) for k, v in val.items()})
                record.update({"best_score": loop["best_score"], "improved": bool(improved),
                               "patience_counter": loop["counter"], "seconds": seconds})
                loop["history"].append(record)
                loop["epoch"] = epoch
                loop["seconds"] += seconds
                if state_path is not None:
                    _save_state(state_path, model, optimizer, best_state, order, loop, cost)
                bar.update(1)
                bar.set_postfix(score=f"{score:.3f}", loss=f"{record['train_loss']:.4f}")
                for hook in hooks:
                    hook(EpochEnd(epoch, record, model, improved, loop["counter"], loop["stop"]))
        model.load_state_dict(best_state)
        model.eval()

    history = pd.DataFrame(loop["history"])
    return TrainResult(model=model, history=history, best_epoch=loop["best_epoch"],
                       best_score=loop["best_score"], epochs_run=loop["epoch"], stopped_early=loop["stop"],
                       cost=cost, seconds=loop["seconds"], sessions=loop["sessions"])


def _save_state(path: Path, model, optimizer, best_state, order, loop, cost) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_state": best_state,
             "order_rng": order.get_state(), "rng": _rng_state(), "loop": loop, "cost": cost.as_dict()}
    _save_torch(path, state)


def _save_torch(path: Path, obj: Any) -> None:
    """Atomic ``torch.save`` via an in-memory buffer (byte-identical files for identical contents)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    artifacts.write_bytes(path, buf.getvalue())


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
    """What the trained model depends on in the prepared data, independent of where the run lives.

    Audio content and front end (from the cache manifest), standardisation
    statistics, excerpt offsets and length, the split and every target value.
    """
    manifest = artifacts.read_json(Path(prepared.cache_dir) / "manifest.json")
    audio = {name: entry["audio_sha256"] for name, entry in sorted(manifest["files"].items())}
    table = prepared.table.sort_index()
    targets = np.ascontiguousarray(table[list(EMOTIONS) + list(MIDLEVEL)].to_numpy(np.float64))
    return {
        "frontend_hash": manifest["frontend_hash"],
        "audio_hash": artifacts.config_hash(audio),
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
    """The hashed configuration of one trained model.

    ``train.seeds`` is left out (the list of seeds to run does not change any
    single model); the seed itself is in.
    """
    train_values = {k: v for k, v in dataclasses.asdict(train).items() if k != "seeds"}
    return {"training_version": TRAINING_VERSION, "system": system, "seed": int(seed),
            "train": train_values, "data_hash": artifacts.config_hash(data), "data": data,
            "adversarial": adversarial}


def model_dir(run_dir: str | os.PathLike, config: dict) -> Path:
    """``run_dir/models/<system>/seed<seed>-<confighash>``."""
    return (Path(run_dir) / "models" / config["system"]
            / f"seed{config['seed']}-{artifacts.config_hash(config)}")


def _final_metrics(model: MERModel, arrays: dict, device, channels_last: bool, cost: Cost) -> dict:
    out = {}
    for split, (x, y, m) in arrays.items():
        emo, bott = predict(model, x, device, channels_last=channels_last)
        cost.eval_forward += len(x)
        out[split] = {"emotions": regression_report(y, emo, EMOTIONS)}
        if bott is not None:
            out[split]["midlevel"] = regression_report(m, bott, MIDLEVEL)
    return out


def trained_dir(prepared, system: str, seed: int, profile: str | Profile, run_dir: str | os.PathLike,
                adversarial_config: dict | None = None) -> Path:
    """The artifact folder :func:`train_system` uses for (system, seed), without training.

    It holds ``metrics.json`` once the model is finished.
    """
    profile = get_profile(profile)
    config = run_config(system, seed, profile.train, data_fingerprint(prepared),
                        adversarial_config if system_spec(system).adversarial else None)
    return model_dir(run_dir, config)


def train_system(prepared, system: str, seed: int, profile: str | Profile, run_dir: str | os.PathLike,
                 device: str | torch.device | None = None, progress: bool = True,
                 adversarial_step: AdversarialStep | None = None, adversarial_config: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Train (or reuse) one (system, seed) of a profile and write its artifacts.

    Parameters
    ----------
    prepared : PreparedData
        The run's prepared data (:func:`mer_lib.prepare.prepare_data`).
    system : str
        One of the five systems.
    seed : int
        Training seed.
    profile : str or Profile
        Supplies the :class:`TrainConfig`.
    run_dir : path-like
        The run directory.
    device : str or torch.device, optional
        Default: CUDA if available, else CPU.
    progress : bool
        Show a progress bar.
    adversarial_step : AdversarialStep, optional
        Required for aA2E / aA2B2E (protocol §5; see :class:`mer_lib.adversarial.PaperAdversary`).
    adversarial_config : dict, optional
        The attack settings of ``adversarial_step``; hashed into the artifact.
    overwrite : bool
        Retrain even if a finished artifact exists.

    Returns
    -------
    Path
        The artifact folder holding ``config.json``, ``model.pt``,
        ``history.csv``, ``cost.json`` and ``metrics.json`` (written last: its
        presence marks a finished run). While training, ``state.pt`` holds the
        resume state; it is deleted at the end.
    """
    profile = get_profile(profile)
    spec = system_spec(system)
    if spec.adversarial != (adversarial_step is not None):
        raise MerError(f"{system}: an adversarial_step is required for, and only for, aA2E and aA2B2E")
    config = run_config(system, seed, profile.train, data_fingerprint(prepared),
                        adversarial_config if spec.adversarial else None)
    out = model_dir(run_dir, config)
    if (out / "metrics.json").exists() and not overwrite:
        return out
    if overwrite:
        for name in ("metrics.json", STATE_FILE):
            (out / name).unlink(missing_ok=True)
    device = resolve_device(device)
    artifacts.write_json(out / "config.json", {
        "hash": artifacts.config_hash(config), "config": config, "profile": profile.name,
        "environment": {"torch": torch.__version__, "numpy": np.__version__}})

    arrays = {s: split_arrays(prepared, s) for s in ("train", "valid", "test")}
    result = train_model(system, *arrays["train"], *arrays["valid"], profile.train, seed, device=device,
                         state_path=out / STATE_FILE, progress=progress, adversarial_step=adversarial_step)
    t0 = time.perf_counter()
    with deterministic_mode(device):
        metrics = _final_metrics(result.model, arrays, device, profile.train.channels_last, result.cost)
    final_seconds = time.perf_counter() - t0

    _save_torch(out / "model.pt", {k: v.cpu().contiguous() for k, v in result.model.state_dict().items()})
    artifacts.write_text(out / "history.csv", result.history.to_csv(index=False))
    artifacts.write_json(out / "cost.json", {
        **result.cost.as_dict(), "wall_seconds": result.seconds + final_seconds,
        "train_loop_seconds": result.seconds, "final_eval_seconds": final_seconds,
        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "sessions": result.sessions, "device": str(device),
        "threads": torch.get_num_threads(),
        "mean_epoch_seconds": float(result.history["seconds"].mean())})
    metrics.update({"system": system, "seed": int(seed), "config_hash": artifacts.config_hash(config),
                    "best_epoch": result.best_epoch,
                    "best_valid_score": result.best_score if math.isfinite(result.best_score) else None,
                    "epochs_run": result.epochs_run})
    artifacts.write_json(out / "metrics.json", metrics)
    (out / STATE_FILE).unlink(missing_ok=True)
    return out


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MERModel, dict]:
    """Load a finished artifact folder: ``(model in eval mode, metrics dict)``."""
    path = Path(path)
    if not (path / "metrics.json").exists():
        raise MerError(f"{path} holds no finished training run (metrics.json missing)")
    config = artifacts.read_json(path / "config.json")["config"]
    model = build_model(config["system"], config["train"]["width"])
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    return model, artifacts.read_json(path / "metrics.json")


def load_trained(run_dir: str | os.PathLike, system: str, seed: int, profile: str | Profile,
                 prepared=None, data_dir: str | os.PathLike | None = None,
                 adversarial_config: dict | None = None,
                 device: str | torch.device = "cpu") -> tuple[MERModel, dict]:
    """Load the model of (system, seed) trained with the profile's settings on the run's data.

    Parameters
    ----------
    run_dir : path-like
        The run directory.
    system, seed : str, int
        Which model.
    profile : str or Profile
        Its :class:`TrainConfig` selects the artifact.
    prepared : PreparedData, optional
        The run's prepared data; if omitted, :func:`mer_lib.prepare.prepare_data`
        is called (it reuses the cache, so it is fast).
    data_dir : path-like, optional
        Passed to ``prepare_data`` (real data).
    adversarial_config : dict, optional
        Attack settings used to train aA2E / aA2B2E.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model : MERModel
        In eval mode.
    metrics : dict
        The contents of ``metrics.json``.

    Raises
    ------
    MerError
        If that model has not been trained yet.
    """
    profile = get_profile(profile)
    if prepared is None:
        from mer_lib.prepare import prepare_data

        prepared = prepare_data(profile, run_dir, data_dir, progress=False)
    spec = system_spec(system)
    config = run_config(system, seed, profile.train, data_fingerprint(prepared),
                        adversarial_config if spec.adversarial else None)
    path = model_dir(run_dir, config)
    if not (path / "metrics.json").exists():
        raise MerError(f"no trained {system} model for seed {seed} with the {profile.name!r} settings: "
                       f"expected {path}; train it first (notebooks 02/03 or mer_lib.training.train_system)")
    return load_model_dir(path, device)
