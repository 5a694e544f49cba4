"""The training loop of the emotion models (protocol §5), resumable and reproducible.

:func:`train_model` trains one model on in-memory arrays, with the losses, validation score and early stopping of
protocol §5. Its parts are :func:`init_state`, :func:`run_epoch` (:func:`train_epoch`, :func:`validate`,
:func:`early_stopping`) and :func:`save_state` / :func:`load_state`; :func:`mer_lib.models.stage.train_system` is the
pipeline stage around it. Epochs are numbered from 1; dropout draws from torch's global RNG.

Resuming: with ``state_path`` the loop saves, atomically after every epoch, all it needs to continue
(:class:`TrainingState` and every RNG state); a restarted run ends with bit-identical weights and metrics. A resume
file that cannot be read or does not fit the model is discarded with a warning naming it, and training starts over.

Adversarial training (protocol §5): ``adversarial_step(model, x_batch, y_batch, epoch, cost)`` is called after every
clean update. It returns adversarial inputs (or ``None`` to skip the batch) and adds the passes it spent to ``cost``
(:meth:`Cost.add`); the loop then takes one more :func:`train_step` on the emotion MSE of the adversarial batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from mer_lib import artifacts
from mer_lib.config import AMP_MODES, EMOTIONS, MIDLEVEL, TrainConfig, check_choice
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column
from mer_lib.models.nets import MERModel, ModelOutput, SystemSpec, build_model, system_spec
from mer_lib.progress import progress_bar

#: Batch size of inference (does not change results beyond float rounding).
EVAL_BATCH: int = 32

#: Name of the resume file in a model's artifact folder.
STATE_FILE = "state.pt"
#: What happens to a damaged resume file.
DISCARD_HINT = "discarding it: training starts over"

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
def deterministic_mode(device: torch.device, deterministic: bool = True) -> Iterator[None]:
    """Deterministic algorithms (and no cuDNN autotuning) inside the block; restored afterwards.

    ``deterministic=False`` allows non-deterministic kernels and cuDNN autotuning instead: faster on a GPU, but reruns
    are no longer bit-identical (:attr:`mer_lib.config.TrainConfig.deterministic`).
    """
    if device.type == "cuda" and deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
                torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[1:]


def autocast(device: torch.device, amp: str = "off") -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass: ``"bf16"`` autocasts to bfloat16, ``"off"`` does nothing."""
    check_choice("amp", amp, AMP_MODES)
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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
    """Compute spent, in examples (a batch of 8 = 8 passes); each field's ``metadata["doc"]`` says what it counts."""

    train_forward: int = field(default=0, metadata={"doc": "example forward passes of training (clean and "
                                                            "adversarial updates, and the attacks making them)"})
    train_backward: int = field(default=0, metadata={"doc": "example backward passes of training (as above)"})
    eval_forward: int = field(default=0, metadata={"doc": "example forward passes of evaluation"})
    examples_seen: int = field(default=0, metadata={"doc": "clean training examples used for updates"})
    optimizer_steps: int = field(default=0, metadata={"doc": "optimiser steps (clean and adversarial)"})
    adversarial_steps: int = field(default=0, metadata={"doc": "optimiser steps on adversarial batches"})

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

    The ``model`` with the best epoch's weights (eval mode), one ``history`` row per epoch, the ``best_epoch``
    (1-based) and its ``best_score``, ``epochs_run``, ``stopped_early``, ``cost``, ``seconds`` (wall time summed over
    sessions) and ``sessions`` (1 + the number of resumes).
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
                midlevel_weight: float = 0.5, emotion_only: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The training loss of a system and its parts: ``(loss, emotion_mse, midlevel_mse)``.

    A2M2E optimises ``(1 - midlevel_weight) * emotion MSE + midlevel_weight * mid-level MSE`` and needs the mid-level
    targets ``m`` (B, 7); the others optimise the MSE against the emotion targets ``y`` (B, 8). ``midlevel_mse`` is
    ``None`` without a bottleneck or ``m``; for A2B2E it is detached and only monitored. ``emotion_only``: the emotion
    MSE whatever the system (the adversarial update's loss, protocol §5).
    """
    emo = F.mse_loss(out.emotions, y)
    if out.bottleneck is None or m is None or emotion_only:
        if spec.midlevel_supervised and not emotion_only:
            raise MerError("A2M2E needs mid-level targets")
        return emo, emo, None
    if spec.midlevel_supervised:
        ml = F.mse_loss(out.bottleneck, m)
        return (1.0 - midlevel_weight) * emo + midlevel_weight * ml, emo, ml
    with torch.no_grad():
        ml = F.mse_loss(out.bottleneck, m)
    return emo, emo, ml


def validation_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of validation excerpts scored: all, or full batches only (reference quirk, 32 of 36: protocol §5)."""
    return (n // batch_size) * batch_size if drop_last else n


def validation_score(y: np.ndarray, emotions: np.ndarray, m: np.ndarray | None = None,
                     bottleneck: np.ndarray | None = None, add_bottleneck: bool = True) -> dict:
    """Validation score and its parts (protocol §5).

    From emotion targets ``y`` and predictions ``(N, 8)`` and, for bottleneck models, mid-level targets ``m`` and
    ``bottleneck`` activations ``(N, 7)``. Returns ``score``, ``emotion_r`` (mean r over the emotions), ``midlevel_r``
    (``nan`` without a bottleneck; added to the score only with ``add_bottleneck``, which the reference sets for
    A2B2E too), ``emotion_mse`` and ``r_<emotion>``.
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


@torch.no_grad()
def predict(model: MERModel, x, device: str | torch.device | None = None,
            batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs in eval mode: ``emotions`` ``(N, 8)`` and ``bottleneck`` ``(N, 7)`` or ``None`` (numpy).

    Parameters
    ----------
    x : array or Tensor (N, 1, T, F)
        Standardised inputs.
    device : str or torch.device, optional
        Default: the model's device.
    """
    device = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    emo, bott = [], []
    for start in range(0, len(x), batch_size):
        out = model(x[start:start + batch_size].to(device))
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


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _nan_to_inf(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


def train_step(model: MERModel, optimizer: torch.optim.Optimizer, spec: SystemSpec, x: torch.Tensor,
               y: torch.Tensor, m: torch.Tensor | None, midlevel_weight: float = 0.5, amp: str = "off",
               emotion_only: bool = False) -> tuple:
    """One optimiser step on a batch (model in train mode); returns :func:`system_loss`'s values, detached.

    ``amp="bf16"`` runs the forward pass under bfloat16 autocast; the loss and the update stay in float32.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp):
        out = model(x)
    loss, emo_mse, ml_mse = system_loss(spec, out, y, m, midlevel_weight, emotion_only)
    loss.backward()
    optimizer.step()
    return loss.detach(), emo_mse.detach(), None if ml_mse is None else ml_mse.detach()


# --------------------------------------------------------------------------
# Inputs and state of the loop; the resume file
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """Checked float32 tensors of one split, kept on the CPU: ``x`` (N, 1, T, F), ``y`` (N, 8), ``m`` (N, 7) or None."""

    x: torch.Tensor
    y: torch.Tensor
    m: torch.Tensor | None


def resident(split: Split, device: torch.device) -> Split:
    """``split`` on ``device`` (a no-op on the CPU): training batches are then cut where the model computes."""
    return Split(split.x.to(device), split.y.to(device), None if split.m is None else split.m.to(device))


@dataclass(frozen=True)
class TrainSetup:
    """The fixed, checked inputs of one :func:`train_model` run.

    ``valid`` holds only the scored validation excerpts (:func:`validation_count`); ``adversarial_step`` is the
    adversarial-training extension point (module docstring).
    """

    spec: SystemSpec
    config: TrainConfig
    device: torch.device
    train: Split
    valid: Split
    adversarial_step: AdversarialStep | None = None

    @property
    def add_bottleneck(self) -> bool:
        """Whether the bottleneck's mid-level r counts in the validation score."""
        return self.spec.midlevel_supervised or self.config.score_unsupervised_bottleneck


@dataclass
class LoopState:
    """Counters and history of the loop, saved under ``"loop"`` in the resume file.

    ``best_epoch`` is 0 before the first epoch and ``best_score`` ``-inf`` for an undefined score; ``seconds`` (wall
    time of the finished epochs) and ``sessions`` (1 + the number of resumes) count over all sessions.
    """

    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -math.inf
    patience_counter: int = 0
    stop: bool = False
    seconds: float = 0.0
    sessions: int = 1
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The plain dict stored in the resume file (its key names and order are part of the format)."""
        return {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_score": self.best_score,
                "counter": self.patience_counter, "stop": self.stop, "seconds": self.seconds,
                "sessions": self.sessions, "history": self.history}

    @classmethod
    def from_dict(cls, saved: dict) -> LoopState:
        """Inverse of :meth:`as_dict`."""
        return cls(epoch=saved["epoch"], best_epoch=saved["best_epoch"], best_score=saved["best_score"],
                   patience_counter=saved["counter"], stop=saved["stop"], seconds=saved["seconds"],
                   sessions=saved["sessions"], history=saved["history"])


@dataclass
class TrainingState:
    """What the loop carries from epoch to epoch (:func:`save_state` writes it all); ``order`` draws batch orders."""

    model: MERModel
    optimizer: torch.optim.Optimizer
    order: torch.Generator
    best_weights: dict[str, torch.Tensor]
    cost: Cost = field(default_factory=Cost)
    loop: LoopState = field(default_factory=LoopState)


def init_state(system: str, config: TrainConfig, seed: int, device: torch.device) -> TrainingState:
    """Seed every RNG, then build the model (initialised right after seeding), Adam and the order generator."""
    seed_everything(seed)
    model = build_model(system, config.width).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = torch.Generator().manual_seed(seed)
    return TrainingState(model, optimizer, order, _clone_state(model))


def save_state(path: Path, state: TrainingState) -> None:
    """Write the resume file: ``state`` and every global RNG state, ``weights_only``-loadable."""
    save_torch(path, {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                      "best_state": state.best_weights, "order_rng": state.order.get_state(),
                      "rng": _rng_state(), "loop": state.loop.as_dict(), "cost": state.cost.as_dict()})


def load_state(path: Path, state: TrainingState, device: torch.device) -> None:
    """Continue ``state`` (fresh from :func:`init_state`) from a resume file, as one more session.

    Raises ``MerError`` if the file cannot be loaded or does not fit this model (``state`` is then partly changed).
    """
    # on the CPU: RNG states must be CPU tensors; the rest is copied to the device below
    saved = artifacts.read_torch(path, hint=DISCARD_HINT)
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])  # moves its state to the parameters' device
        state.best_weights = {k: v.to(device) for k, v in saved["best_state"].items()}
        state.order.set_state(saved["order_rng"])
        _set_rng_state(saved["rng"])
        state.loop = LoopState.from_dict(saved["loop"])
        state.cost = Cost(**saved["cost"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise MerError(f"{path}: not a resume state of this model ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else 'no details'}); {DISCARD_HINT}") from None
    state.loop.sessions += 1


def start_state(system: str, config: TrainConfig, seed: int, device: torch.device,
                state_path: Path | None) -> TrainingState:
    """:func:`init_state`, continued from the resume file ``state_path`` (``None``: no resuming) if there is one.

    A damaged resume file is deleted with a warning naming it, and training starts from a fresh state.
    """
    state = init_state(system, config, seed, device)
    if state_path is None or not state_path.exists():
        return state
    try:
        load_state(state_path, state, device)
    except MerError as exc:
        warnings.warn(str(exc), stacklevel=3)
        state_path.unlink(missing_ok=True)
        state = init_state(system, config, seed, device)
    return state


def save_torch(path: Path, obj: Any) -> None:
    """Atomic ``torch.save`` via an in-memory buffer (byte-identical files for identical contents)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    artifacts.write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------
def _counted_step(state: TrainingState, setup: TrainSetup, x: torch.Tensor, y: torch.Tensor,
                  m: torch.Tensor | None, emotion_only: bool = False) -> tuple:
    """:func:`train_step`, counted in the cost (one forward and one backward pass per example)."""
    losses = train_step(state.model, state.optimizer, setup.spec, x, y, m, setup.config.midlevel_loss_weight,
                        setup.config.amp, emotion_only)
    state.cost.add(forward=len(x), backward=len(x))
    state.cost.optimizer_steps += 1
    return losses


def _adversarial_update(state: TrainingState, setup: TrainSetup, xb: torch.Tensor, yb: torch.Tensor,
                        epoch: int) -> torch.Tensor | None:
    """Ask the adversarial step for inputs; if it gives some, one more step on their emotion MSE (returns it)."""
    if setup.adversarial_step is None:
        return None
    x_adv = setup.adversarial_step(state.model, xb, yb, epoch, state.cost)
    if x_adv is None:
        return None
    x_adv = x_adv.detach().to(setup.device)
    loss, _, _ = _counted_step(state, setup, x_adv, yb, None, emotion_only=True)
    state.cost.adversarial_steps += 1
    return loss


def train_epoch(state: TrainingState, setup: TrainSetup, epoch: int) -> dict:
    """One pass over the shuffled training batches (last partial batch dropped).

    The batches are cut where the training split lies and the losses summed there in float64, so the loop does not wait
    for the device after every step (one transfer per epoch, the same sums as adding the steps' values in Python).
    Returns ``epoch`` and the mean ``train_loss``, ``train_emotion_mse``, ``train_midlevel_mse`` and
    ``train_adversarial_mse`` (``nan`` where undefined).
    """
    train, bs, device = setup.train, setup.config.batch_size, setup.device
    perm = torch.randperm(len(train.x), generator=state.order).to(train.x.device)
    state.model.train()
    n_batches = len(perm) // bs
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, emotion MSE, mid-level MSE, adversarial MSE
    n_ml = n_adv = 0
    for b in range(n_batches):
        idx = perm[b * bs:(b + 1) * bs]
        xb, yb = train.x[idx].to(device), train.y[idx].to(device)
        mb = None if train.m is None else train.m[idx].to(device)
        loss, emo_mse, ml_mse = _counted_step(state, setup, xb, yb, mb)
        state.cost.examples_seen += bs
        sums[0] += loss.double()
        sums[1] += emo_mse.double()
        if ml_mse is not None:
            sums[2] += ml_mse.double()
            n_ml += 1
        adv_mse = _adversarial_update(state, setup, xb, yb, epoch)
        if adv_mse is not None:
            sums[3] += adv_mse.double()
            n_adv += 1
    total = sums.tolist()
    nan = float("nan")
    return {"epoch": epoch, "train_loss": total[0] / n_batches, "train_emotion_mse": total[1] / n_batches,
            "train_midlevel_mse": total[2] / n_ml if n_ml else nan,
            "train_adversarial_mse": total[3] / n_adv if n_adv else nan}


def validate(model: MERModel, setup: TrainSetup, cost: Cost) -> dict:
    """:func:`validation_score` of ``model`` on the scored validation excerpts (counted in ``cost``)."""
    valid = setup.valid
    emo, bott = predict(model, valid.x, setup.device)
    cost.eval_forward += len(valid.x)
    return validation_score(valid.y.numpy(), emo, None if valid.m is None else valid.m.numpy(), bott,
                            add_bottleneck=setup.add_bottleneck)


def early_stopping(loop: LoopState, epoch: int, score: float, patience: int) -> bool:
    """Record an epoch's validation score in ``loop``; return whether it improved.

    The first epoch always improves; ties count and an undefined score counts as ``-inf`` (protocol §5). Sets
    ``loop.stop`` once ``patience`` epochs in a row brought no improvement.
    """
    improved = loop.best_epoch == 0 or _nan_to_inf(score) >= loop.best_score
    if improved:
        loop.best_epoch, loop.best_score, loop.patience_counter = epoch, _nan_to_inf(score), 0
    else:
        loop.patience_counter += 1
    loop.stop = loop.patience_counter >= patience
    return improved


def run_epoch(state: TrainingState, setup: TrainSetup, state_path: Path | None = None) -> EpochEnd:
    """Train and validate the next epoch, keep the best weights, save the resume file (if a path is given)."""
    epoch = state.loop.epoch + 1
    t0 = time.perf_counter()
    record = train_epoch(state, setup, epoch)
    val = validate(state.model, setup, state.cost)
    state.model.train()
    improved = early_stopping(state.loop, epoch, float(val["score"]), setup.config.patience)
    if improved:
        state.best_weights = _clone_state(state.model)
    seconds = time.perf_counter() - t0
    record.update({f"valid_{k}": float(v) for k, v in val.items()})
    record.update({"best_score": state.loop.best_score, "improved": bool(improved),
                   "patience_counter": state.loop.patience_counter, "seconds": seconds})
    state.loop.history.append(record)
    state.loop.epoch = epoch
    state.loop.seconds += seconds
    if state_path is not None:
        save_state(state_path, state)
    return EpochEnd(epoch, record, state.model, improved, state.loop.patience_counter, state.loop.stop)


# --------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------
def _check_arrays(system: str, spec: SystemSpec, x, y, m, split: str) -> Split:
    x, y = _float_tensor(x), _float_tensor(y)
    if x.ndim != 4 or x.shape[1] != 1:
        raise MerError(f"{split} inputs must have shape (N, 1, T, F), got {tuple(x.shape)}")
    if y.shape != (x.shape[0], len(EMOTIONS)):
        raise MerError(f"{split} emotion targets must have shape ({x.shape[0]}, {len(EMOTIONS)}), "
                       f"got {tuple(y.shape)}")
    if m is None:
        if spec.midlevel_supervised or (spec.bottleneck and split == "valid"):
            raise MerError(f"{system} needs {split} mid-level targets")
        return Split(x, y, None)
    m = _float_tensor(m)
    if m.shape != (x.shape[0], len(MIDLEVEL)):
        raise MerError(f"{split} mid-level targets must have shape ({x.shape[0]}, {len(MIDLEVEL)}), "
                       f"got {tuple(m.shape)}")
    return Split(x, y, m)


def check_inputs(system: str, x_train, y_train, m_train, x_valid, y_valid, m_valid, config: TrainConfig,
                 device: str | torch.device | None = None,
                 adversarial_step: AdversarialStep | None = None) -> TrainSetup:
    """Check the arguments of :func:`train_model` and bundle them (the validation split cut to the scored excerpts).

    Raises ``MerError`` on a missing adversarial step, invalid settings, wrong shapes, missing mid-level targets or
    too few excerpts.
    """
    spec = system_spec(system)
    if spec.adversarial and adversarial_step is None:
        raise MerError(f"{system} is trained adversarially: pass an adversarial_step")
    if config.batch_size < 1 or config.max_epochs < 1 or config.patience < 1:
        raise MerError(f"batch_size, max_epochs and patience must be >= 1 (got {config.batch_size}, "
                       f"{config.max_epochs}, {config.patience})")
    train = _check_arrays(system, spec, x_train, y_train, m_train, "train")
    if len(train.x) // config.batch_size == 0:
        raise MerError(f"{len(train.x)} training excerpts do not fill one batch of {config.batch_size}")
    valid = _check_arrays(system, spec, x_valid, y_valid, m_valid, "valid")
    n_val = validation_count(len(valid.x), config.batch_size, config.val_drop_last)
    if n_val == 0:
        raise MerError(f"no validation excerpts to score ({len(valid.x)} with batch {config.batch_size}, "
                       f"val_drop_last={config.val_drop_last})")
    scored = Split(valid.x[:n_val], valid.y[:n_val], None if valid.m is None else valid.m[:n_val])
    return TrainSetup(spec, config, resolve_device(device), train, scored, adversarial_step)


def train_model(system: str, x_train, y_train, m_train, x_valid, y_valid, m_valid,
                config: TrainConfig, seed: int, device: str | torch.device | None = None,
                state_path: str | os.PathLike | None = None, progress: bool = True,
                hooks: Sequence[Callable[[EpochEnd], None]] = (),
                adversarial_step: AdversarialStep | None = None) -> TrainResult:
    """Train one model of ``system`` with ``config`` and ``seed``.

    Parameters
    ----------
    system : str
        One of the five systems; aA2E and aA2B2E need ``adversarial_step``.
    x_train, x_valid : array or Tensor (N, 1, T, F)
        Standardised inputs (the training split is moved to ``device`` once, :func:`resident`).
    y_train, y_valid : array (N, 8)
        Emotion targets (divided by 10).
    m_train, m_valid : array (N, 7) or None
        Mid-level targets: needed by A2M2E (training) and every bottleneck model (validation score).
    device : str or torch.device, optional
        Default: CUDA if available, else CPU.
    state_path : path-like, optional
        Resume file, written after every epoch and resumed from; the caller deletes it once the results are stored.
    hooks : sequence of callables
        Called with an :class:`EpochEnd` after every epoch, once the state is saved (an exception leaves it resumable).
    adversarial_step : AdversarialStep, optional
        Adversarial-training extension point (module docstring).

    Returns
    -------
    TrainResult
        History columns: ``epoch``, ``train_loss`` (the optimised loss), ``train_emotion_mse``,
        ``train_midlevel_mse`` (bottleneck vs mid-level; for A2B2E only monitored), ``train_adversarial_mse``,
        ``valid_score``, ``valid_emotion_r``, ``valid_midlevel_r``, ``valid_emotion_mse``, ``valid_r_<emotion>``,
        ``best_score``, ``improved``, ``patience_counter``, ``seconds``.
    """
    setup = check_inputs(system, x_train, y_train, m_train, x_valid, y_valid, m_valid, config, device,
                         adversarial_step)
    setup = dataclasses.replace(setup, train=resident(setup.train, setup.device))
    state_path = Path(state_path) if state_path is not None else None
    with deterministic_mode(setup.device, config.deterministic):
        state = start_state(system, config, seed, setup.device, state_path)
        with progress_bar(total=config.max_epochs, initial=state.loop.epoch, enabled=progress,
                          desc=f"{system} seed {seed}", leave=False, unit="epoch") as bar:
            while not state.loop.stop and state.loop.epoch < config.max_epochs:
                end = run_epoch(state, setup, state_path)
                bar.update(1)
                bar.set_postfix(score=f"{end.record['valid_score']:.3f}", loss=f"{end.record['train_loss']:.4f}")
                for hook in hooks:
                    hook(end)
        state.model.load_state_dict(state.best_weights)
        state.model.eval()
    loop = state.loop
    return TrainResult(model=state.model, history=pd.DataFrame(loop.history), best_epoch=loop.best_epoch,
                       best_score=loop.best_score, epochs_run=loop.epoch, stopped_early=loop.stop,
                       cost=state.cost, seconds=loop.seconds, sessions=loop.sessions)
