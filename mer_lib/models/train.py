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
from mer_lib.config import EMOTIONS, MIDLEVEL, TrainConfig
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column
from mer_lib.models.nets import MERModel, ModelOutput, SystemSpec, build_model, system_spec

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
    save_torch(path, state)


def save_torch(path: Path, obj: Any) -> None:
    """Atomic ``torch.save`` via an in-memory buffer (byte-identical files for identical contents)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    artifacts.write_bytes(path, buf.getvalue())
