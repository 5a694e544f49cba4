"""The white-box attack of the study (protocol §6): a batched engine, paper mode and bounded mode.

One engine attacks a batch of excerpts at once: every example carries its own state and is frozen once done, so a
batch gives the results of attacking one excerpt at a time (up to the last bits of the model's batched arithmetic).
Parts: :class:`AttackState`, an update rule (:class:`AdamUpdate`, :class:`SignUpdate`, :class:`L2Update`), a
projection and a stopping rule (:class:`CorrelationStop`, :class:`FixedSteps`). The model is frozen in eval mode.

Paper mode (:func:`paper_attack`, protocol §6.1) reproduces the reference attack, bugs included. Per excerpt ``x``
with labels ``y``::

    delta = 0; Adam(lr=0.002, betas=(0.9, 0.999), eps=1e-8); best = delta; t unset
    for it = 1 .. max_iters:
        p = f(x + delta);  r = Pearson(y, p) over the 8 emotions (float64)
        if t unset: t = ceil(10 r) / 10        (unset: None or exactly 0.0, the reference's ``if not t``)
        if r <= t:
            best = delta
            if t >= -0.9: t = t - 0.1          (float64: -0.8999999999999998 ...)
            else: converged; stop              (no step at this iteration)
        Adam step on delta with gradient -sign(d MSE(p, y) / d delta)   (ascent)
    (no clamp: the reference's clamp result is discarded, delta is unbounded)

``iterations`` counts evaluated iterates (a converged example took ``iterations - 1`` steps). The logged adversarial
prediction is that of the last evaluated iterate; ``norm`` and the example ``x + best`` come from ``best``. A NaN
correlation leaves ``t`` unset and never hits; the reference's unused step after the last iteration is skipped.

Bounded mode (:func:`bounded_attack`, protocol §6.2) projects ``delta`` onto the L-infinity (``"bounded"``) or L2
(``"bounded-l2"``) ball of radius ``eps`` after every step; it logs the prediction of the returned example.
:class:`AttackResult` holds the outcome, :func:`attack_table` makes it a tidy table (:mod:`mer_lib.attacks.logs`).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Iterator, NamedTuple

import librosa
import numpy as np
import pandas as pd
import torch
from torch import nn

from mer_lib.attacks.logs import bottleneck_columns, tidy_columns
from mer_lib.config import EMOTIONS, SAMPLE_RATE, AttackConfig, check_choice, check_eps
from mer_lib.errors import MerError
from mer_lib.progress import progress_bar

#: Bumped whenever a code change alters attack results; part of every attack artifact's hash.
ATTACK_VERSION: int = 1


#: Adam defaults of ``torch.optim.Adam`` (the reference uses them).
ADAM_BETAS: tuple[float, float] = (0.9, 0.999)


ADAM_EPS: float = 1e-8


#: Norms of the bounded attack's ball: ``"linf"`` (mode ``"bounded"``) and ``"l2"`` (mode ``"bounded-l2"``).
NORMS: tuple[str, ...] = ("linf", "l2")


@dataclass
class AttackResult:
    """Per-example outcome of an attack (numpy arrays, first axis = example).

    Attributes
    ----------
    mode, eps : str, float
        ``"paper"``, ``"bounded"`` (L-infinity ball) or ``"bounded-l2"``; the ball's radius (``nan`` in paper mode).
    iterations : int64 (N,)
        Evaluated iterates (paper mode, correlation stopping) or steps taken (fixed steps).
    converged : bool (N,)
        Stopped by the correlation rule before the budget.
    adv_target : float64 (N,)
        Correlation threshold ``t`` at the end (``nan`` if none).
    delta : float32 (N, 1, T, F)
        The returned perturbation (paper: ``best``); the adversarial example is ``x + delta``.
    clean_emotions, adv_emotions : float32 (N, 8)
        Clean and logged adversarial predictions (paper: last evaluated iterate; bounded: the returned example).
    clean_bottleneck, adv_bottleneck : float32 (N, 7) or None
        Bottleneck activations of bottleneck models, same iterates.
    l2, linf : float64 (N,)
        Norms of ``delta`` (``l2`` is the log's ``norm``, computed in float32 as the reference does).
    snr_db, db_reference : float64 (N,)
        :func:`spectral_snr_db` (``nan`` without ``mean``/``std``); :func:`db_reference` (``nan`` unless requested).
    forward_passes, backward_passes : int
        Example passes through the model spent (for training cost counters).
    """

    mode: str
    eps: float
    iterations: np.ndarray
    converged: np.ndarray
    adv_target: np.ndarray
    delta: np.ndarray
    clean_emotions: np.ndarray
    adv_emotions: np.ndarray
    clean_bottleneck: np.ndarray | None
    adv_bottleneck: np.ndarray | None
    l2: np.ndarray
    linf: np.ndarray
    snr_db: np.ndarray
    db_reference: np.ndarray
    forward_passes: int = 0
    backward_passes: int = 0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.iterations)

    @staticmethod
    def concat(parts: list["AttackResult"]) -> "AttackResult":
        """Join the results of consecutive batches."""
        if not parts:
            raise MerError("no attack results to concatenate")
        first = parts[0]

        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values)

        arrays = {name: cat(name) for name in ("iterations", "converged", "adv_target", "delta",
                                               "clean_emotions", "adv_emotions", "clean_bottleneck",
                                               "adv_bottleneck", "l2", "linf", "snr_db", "db_reference")}
        return AttackResult(mode=first.mode, eps=first.eps, **arrays,
                            forward_passes=sum(p.forward_passes for p in parts),
                            backward_passes=sum(p.backward_passes for p in parts), info=dict(first.info))


# --------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------
@contextlib.contextmanager
def frozen_model(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and parameters without gradients inside the block; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson r of matching rows of ``a`` and ``b`` (B, K), float64, clipped to [-1, 1]; ``nan`` for a constant row."""
    a = a.double()
    b = b.double()
    am = a - a.mean(dim=1, keepdim=True)
    bm = b - b.mean(dim=1, keepdim=True)
    r = ((am / am.norm(dim=1, keepdim=True)) * (bm / bm.norm(dim=1, keepdim=True))).sum(dim=1)
    return r.clamp(-1.0, 1.0)


def spectral_snr_db(x, delta, mean: float, std: float) -> np.ndarray:
    """True spectral SNR in dB (protocol §6.2) of perturbations of standardised log spectrograms, float64 ``(N,)``.

    ``x``, ``delta``: clean inputs and perturbations ``(N, ...)``; ``mean``, ``std``: the global standardisation
    statistics (``PreparedData.mean``, ``.std``). ``S_adv < 0`` is not clipped; ``inf`` for a zero perturbation.
    """
    x = torch.as_tensor(x).detach().double().cpu()
    d = torch.as_tensor(delta).detach().double().cpu()
    clean = torch.pow(10.0, x * std + mean) - 1.0
    adv = torch.pow(10.0, (x + d) * std + mean) - 1.0
    signal = clean.pow(2).flatten(1).sum(dim=1)
    noise = (adv - clean).pow(2).flatten(1).sum(dim=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(signal.numpy() / noise.numpy())


def db_reference(x, delta, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The reference's pseudo-SNR (``db`` of the published logs, protocol §6.1), float64 per example; slow.

    Each input ``x`` ``(N, 1, T, F)`` and its perturbation ``delta`` go through ``librosa.feature.inverse.mel_to_stft``
    as if they were 313-band mel power spectrograms, then ``librosa.amplitude_to_db``; the value is the mean of
    ``db_x - db_delta``. Uses the project's pinned librosa (the reference's version is unknown).
    """
    x = torch.as_tensor(x).detach().cpu().float().numpy()
    d = torch.as_tensor(delta).detach().cpu().float().numpy()
    out = np.empty(len(x), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about empty mel filters at 313 bands
        for i in range(len(x)):
            ax = librosa.feature.inverse.mel_to_stft(np.squeeze(x[i]), sr=sr)
            ad = librosa.feature.inverse.mel_to_stft(np.squeeze(d[i]), sr=sr)
            out[i] = float(np.mean(librosa.amplitude_to_db(ax) - librosa.amplitude_to_db(ad)))
    return out


def _as_tensor(a) -> torch.Tensor:
    """A tensor view of a tensor, or a float32 copy of an array (which may be read-only)."""
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a, dtype=np.float32))


def _check_inputs(model: nn.Module, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    x = _as_tensor(x)
    y = _as_tensor(y)
    if x.ndim != 4 or x.shape[1] != 1:
        raise MerError(f"attack inputs must have shape (N, 1, T, F), got {tuple(x.shape)}")
    if y.shape != (x.shape[0], len(EMOTIONS)):
        raise MerError(f"attack labels must have shape ({x.shape[0]}, {len(EMOTIONS)}), got {tuple(y.shape)}")
    if x.shape[0] == 0:
        raise MerError("nothing to attack: 0 inputs")
    return x.detach().to(device=device, dtype=torch.float32), y.detach().to(device=device, dtype=torch.float32)


# --------------------------------------------------------------------------
# Update rules: a step on the perturbation of the active examples
# --------------------------------------------------------------------------
class AdamTables(NamedTuple):
    """Adam's per-step factors by step count ``k = 0 .. steps`` (float32, on the attack's device).

    ``neg_step`` is ``-lr / (1 - beta1**k)`` (0 at ``k = 0``), ``bc2_sqrt`` is ``sqrt(1 - beta2**k)`` (1 at ``k = 0``).
    """

    neg_step: torch.Tensor
    bc2_sqrt: torch.Tensor


def adam_tables(lr: float, steps: int, device: torch.device) -> AdamTables:
    """:class:`AdamTables` for learning rate ``lr`` and step counts up to ``steps``, on ``device``.

    Computed in Python floats exactly as ``torch.optim.Adam`` does, then converted to float32 (as its kernels use them).
    """
    b1, b2 = ADAM_BETAS
    neg = [0.0] + [-(lr / (1 - b1 ** k)) for k in range(1, steps + 1)]
    bc2 = [1.0] + [(1 - b2 ** k) ** 0.5 for k in range(1, steps + 1)]
    return AdamTables(_float32(neg, device), _float32(bc2, device))


def _float32(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).to(device=device, dtype=torch.float32)


def adam_step(delta: torch.Tensor, neg_sign: torch.Tensor, m: torch.Tensor, v: torch.Tensor, k: torch.Tensor,
              tables: AdamTables) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Adam step per example, op by op as ``torch.optim.Adam``; returns new ``(delta, m, v)``, inputs unchanged.

    Parameters
    ----------
    delta, m, v : Tensor (B, 1, T, F)
        Perturbations and the first and second moments before the step.
    neg_sign : Tensor (B, 1, T, F)
        ``-sign(dMSE / d delta)``, the reference's "gradient" (descending on it ascends the loss).
    k, tables : int64 Tensor (B,), AdamTables
        Step count of each example after this step (1 for the first step); from :func:`adam_tables`.
    """
    b1, b2 = ADAM_BETAS
    m = torch.lerp(m, neg_sign, 1 - b1)
    v = v.mul(b2).addcmul_(neg_sign, neg_sign, value=1 - b2)
    denom = (v.sqrt() / tables.bc2_sqrt[k].view(-1, 1, 1, 1)).add_(ADAM_EPS)
    return delta + (tables.neg_step[k].view(-1, 1, 1, 1) * m) / denom, m, v


def sign_step(delta: torch.Tensor, neg_sign: torch.Tensor, rate: float) -> torch.Tensor:
    """One PGD step ``delta + rate * sign(dMSE / d delta)``, as ``delta - rate * neg_sign`` (see :func:`adam_step`)."""
    return delta - rate * neg_sign


def default_step_size(eps: float, steps: int) -> float:
    """Default PGD step of the bounded attack: ``2.5 * eps / steps`` (protocol §6.2)."""
    return 2.5 * eps / steps


def linf_radius(eps: float) -> float:
    """The largest float32 value not above ``eps``: clamping float32 tensors to it keeps ``|delta| <= eps``."""
    bound = np.float32(eps)
    return float(np.nextafter(bound, np.float32(0)) if float(bound) > eps else bound)


def project_linf(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the L-infinity ball of radius ``eps`` (rounded down to float32 by :func:`linf_radius`)."""
    radius = linf_radius(eps)
    return delta.clamp(-radius, radius)


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Projection onto the L2 ball of radius ``eps`` per example (first axis): ``delta * min(1, eps / ||delta||_2)``.

    Float rounding may leave a norm a few ulps above ``eps``.
    """
    norms = delta.flatten(1).norm(dim=1).clamp_min(torch.finfo(delta.dtype).tiny)
    factor = (eps / norms).clamp(max=1.0)
    return delta * factor.view((-1,) + (1,) * (delta.ndim - 1))


def l2_step(delta: torch.Tensor, grad: torch.Tensor, rate: float) -> torch.Tensor:
    """One L2 steepest-ascent step ``delta + rate * grad / ||grad||_2`` per example; a zero gradient does not move."""
    norms = grad.flatten(1).norm(dim=1)
    scale = torch.where(norms > 0, rate / norms.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(norms))
    return delta + grad * scale.view((-1,) + (1,) * (grad.ndim - 1))


def _neg_sign(grad: torch.Tensor) -> torch.Tensor:
    """``-sign(grad)``: the reference hands it to a minimiser, which makes its step an ascent on the MSE."""
    return torch.sign(grad).neg_()


@dataclass(frozen=True)
class SignUpdate:
    """The PGD update (:func:`sign_step` with step size ``rate``); it keeps no per-example moments."""

    rate: float

    def moments(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Initial per-example state: none."""
        return {}

    def __call__(self, delta: torch.Tensor, grad: torch.Tensor, moments: dict[str, torch.Tensor],
                 k: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """New perturbations and moments of the active examples (``grad``: of the MSE, ascended)."""
        return sign_step(delta, _neg_sign(grad), self.rate), {}


@dataclass(frozen=True)
class L2Update(SignUpdate):
    """The L2 PGD update (:func:`l2_step` with step size ``rate``); like :class:`SignUpdate`, no moments."""

    def __call__(self, delta: torch.Tensor, grad: torch.Tensor, moments: dict[str, torch.Tensor],
                 k: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """New perturbations and moments of the active examples."""
        return l2_step(delta, grad, self.rate), {}


@dataclass(frozen=True)
class AdamUpdate:
    """The paper's signed-gradient Adam update (:func:`adam_step`) with per-example moments ``m`` and ``v``."""

    tables: AdamTables

    def moments(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Initial per-example state: zero moments shaped like ``x``."""
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x)}

    def __call__(self, delta: torch.Tensor, grad: torch.Tensor, moments: dict[str, torch.Tensor],
                 k: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """New perturbations and moments of the active examples."""
        new, m, v = adam_step(delta, _neg_sign(grad), moments["m"], moments["v"], k, self.tables)
        return new, {"m": m, "v": v}


# --------------------------------------------------------------------------
# The running batch
# --------------------------------------------------------------------------
class Iterate(NamedTuple):
    """One evaluation of the active examples.

    ``delta`` (B, 1, T, F): a leaf that requires gradients; predictions (B, 8), ``emotions`` on the graph and ``pred``
    detached; ``bottleneck`` (B, 7), detached, or None.
    """

    delta: torch.Tensor
    emotions: torch.Tensor
    pred: torch.Tensor
    bottleneck: torch.Tensor | None


@dataclass
class AttackState:
    """The running batch of an attack (tensors on the model's device, first axis = example).

    Done examples leave the active set: ``idx`` lists the rows still attacked (``None``: all of them).

    Attributes
    ----------
    x, y : Tensor (N, 1, T, F), (N, 8)
        Clean inputs and labels.
    delta, best : Tensor (N, 1, T, F)
        Current perturbation; the returned one (correlation rule: the best iterate; fixed steps: the final iterate).
    moments : dict of str to Tensor
        Per-example state of the update rule (Adam's ``m`` and ``v``; none for PGD).
    steps, iterations : int64 (N,)
        Steps taken; evaluated iterates (fixed steps: steps taken, at the end).
    t : float64 (N,)
        Correlation threshold (``nan`` = unset).
    converged, active : bool (N,)
        Stopped by the correlation rule; still attacked.
    last_p, best_p, clean_p : Tensor (N, 8)
        Predictions of the last evaluated iterate, of ``best`` and of the clean input.
    last_b, best_b, clean_b : Tensor (N, 7) or None
        The same for the bottleneck activations (bottleneck models only).
    forward, backward : int
        Example passes spent.
    """

    x: torch.Tensor
    y: torch.Tensor
    delta: torch.Tensor
    best: torch.Tensor
    moments: dict[str, torch.Tensor]
    steps: torch.Tensor
    t: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    active: torch.Tensor
    last_p: torch.Tensor
    best_p: torch.Tensor
    clean_p: torch.Tensor | None = None
    last_b: torch.Tensor | None = None
    best_b: torch.Tensor | None = None
    clean_b: torch.Tensor | None = None
    idx: torch.Tensor | None = None
    forward: int = 0
    backward: int = 0

    @classmethod
    def start(cls, x: torch.Tensor, y: torch.Tensor, moments: dict[str, torch.Tensor]) -> "AttackState":
        """The state before the first iteration: zero perturbations, thresholds unset, all examples active."""
        n, dev = x.shape[0], x.device
        return cls(x=x, y=y, delta=torch.zeros_like(x), best=torch.zeros_like(x), moments=moments,
                   steps=torch.zeros(n, dtype=torch.long, device=dev),
                   t=torch.full((n,), math.nan, dtype=torch.float64, device=dev),
                   iterations=torch.zeros(n, dtype=torch.long, device=dev),
                   converged=torch.zeros(n, dtype=torch.bool, device=dev),
                   active=torch.ones(n, dtype=torch.bool, device=dev),
                   last_p=torch.zeros(n, len(EMOTIONS), device=dev), best_p=torch.zeros(n, len(EMOTIONS), device=dev))

    def take(self, a: torch.Tensor) -> torch.Tensor:
        """The active rows of the per-example tensor ``a``."""
        return a if self.idx is None else a.index_select(0, self.idx)

    def put(self, dst: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``dst`` with its active rows replaced by ``values`` (only where ``mask``, if given); a new tensor."""
        if mask is not None:
            shape = (-1,) + (1,) * (values.ndim - 1)
            values = torch.where(mask.view(shape), values, self.take(dst))
        if self.idx is None:
            return values.clone() if values is dst else values
        return dst.index_copy(0, self.idx, values)

    def record_iterate(self, it: int, cur: Iterate) -> None:
        """Store the evaluation ``cur`` of iteration ``it`` (the first one gives the clean predictions)."""
        if it == 1:
            self.clean_p = cur.pred.clone()
            if cur.bottleneck is not None:
                self.clean_b = cur.bottleneck.clone()
                self.last_b = torch.zeros_like(cur.bottleneck)
                self.best_b = torch.zeros_like(cur.bottleneck)
        self.last_p = self.put(self.last_p, cur.pred)
        if cur.bottleneck is not None:
            self.last_b = self.put(self.last_b, cur.bottleneck)
        count = torch.full((cur.pred.shape[0],), it, dtype=torch.long, device=self.x.device)
        self.iterations = self.put(self.iterations, count)

    def keep_best(self, hit: torch.Tensor, cur: Iterate) -> None:
        """Make ``cur`` the best iterate of the active examples where ``hit``."""
        self.best = self.put(self.best, cur.delta.detach(), hit)
        self.best_p = self.put(self.best_p, cur.pred, hit)
        if cur.bottleneck is not None:
            self.best_b = self.put(self.best_b, cur.bottleneck, hit)


def _evaluate(model: nn.Module, state: AttackState, it: int) -> Iterate:
    """Forward pass of the active examples at iteration ``it``, recorded in ``state``."""
    d = state.take(state.delta).detach().requires_grad_(True)
    out = model(state.take(state.x) + d)
    state.forward += d.shape[0]
    bottleneck = out.bottleneck.detach() if out.bottleneck is not None else None
    cur = Iterate(d, out.emotions, out.emotions.detach(), bottleneck)
    state.record_iterate(it, cur)
    return cur


Update = SignUpdate | L2Update | AdamUpdate


def _step(state: AttackState, update: Update, cur: Iterate, proceed: torch.Tensor | None,
          project: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
    """Backward pass and one update of the active examples where ``proceed`` (all if ``None``)."""
    loss = (cur.emotions - state.take(state.y)).pow(2).mean(dim=1).sum()
    (grad,) = torch.autograd.grad(loss, cur.delta)
    state.backward += cur.delta.shape[0]
    k = state.take(state.steps) + 1
    moments = {name: state.take(value) for name, value in state.moments.items()}
    new, moments = update(cur.delta.detach(), grad, moments, k)
    for name, value in moments.items():
        state.moments[name] = state.put(state.moments[name], value, proceed)
    if project is not None:
        new = project(new)
    state.delta = state.put(state.delta, new, proceed)
    state.steps = state.put(state.steps, k, proceed)


# --------------------------------------------------------------------------
# Stopping rules
# --------------------------------------------------------------------------
def correlation_threshold(r: torch.Tensor, t: torch.Tensor,
                          zero_threshold_unsets: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's stopping rule for one evaluation (protocol §6.1), elementwise over examples.

    Parameters
    ----------
    r, t : float64 Tensor (B,)
        Pearson correlation of labels and predictions (``nan`` never hits); thresholds before (``nan``: unset).
    zero_threshold_unsets : bool
        Treat a threshold of exactly 0.0 as unset (the reference's ``if not t``).

    Returns
    -------
    t, hit, done : Tensor (B,)
        New thresholds; whether the iterate is the new best; whether the example converged and stops here.
    """
    unset = torch.isnan(t)
    if zero_threshold_unsets:
        unset = unset | (t == 0.0)
    t = torch.where(unset, torch.ceil(r * 10.0) / 10.0, t)
    hit = r <= t  # False for nan
    lower = hit & (t >= -0.9)
    done = hit & ~lower
    return torch.where(lower, t - 0.1, t), hit, done


@dataclass(frozen=True)
class CorrelationStop:
    """Stopping by :func:`correlation_threshold`: an example stops when it converges; ``best`` is returned."""

    zero_threshold_unsets: bool = False

    def judge(self, state: AttackState, cur: Iterate) -> torch.Tensor:
        """Apply the rule to the evaluated active examples; returns which of them take a step."""
        r = pearson_rows(state.take(state.y), cur.pred)
        t, hit, done = correlation_threshold(r, state.take(state.t), self.zero_threshold_unsets)
        state.t = state.put(state.t, t)
        state.keep_best(hit, cur)
        state.converged = state.put(state.converged, done | state.take(state.converged))
        proceed = ~done
        state.active = state.put(state.active, proceed)
        return proceed

    def finish(self, model: nn.Module, state: AttackState) -> None:
        """Nothing to do: ``best`` and its predictions are already recorded."""


@dataclass(frozen=True)
class FixedSteps:
    """No early stop: every step is taken, and the final iterate is evaluated once more and returned."""

    def judge(self, state: AttackState, cur: Iterate) -> None:
        """Every example takes a step (``None``)."""
        return None

    def finish(self, model: nn.Module, state: AttackState) -> None:
        """Evaluate the final iterate; it becomes ``best``, and ``iterations`` the steps taken."""
        with torch.no_grad():
            out = model(state.x + state.delta)
        state.forward += len(state.x)
        state.best = state.delta
        state.best_p = out.emotions.detach()
        state.best_b = out.bottleneck.detach() if out.bottleneck is not None else None
        state.iterations = state.steps.clone()


# --------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------
def _engine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, update: Update,
            stop: CorrelationStop | FixedSteps, *, max_iters: int,
            project: Callable[[torch.Tensor], torch.Tensor] | None) -> AttackState:
    """The batched attack loop (see the module docstring); ``project`` ``None``: no projection."""
    with frozen_model(model):
        state = AttackState.start(x, y, update.moments(x))
        for it in range(1, max_iters + 1):
            cur = _evaluate(model, state, it)
            proceed = stop.judge(state, cur)  # None: every example takes a step
            still = None if proceed is None else state.active.nonzero().squeeze(1)  # the one host sync
            if still is not None and (still.numel() == 0 or it == max_iters):
                break  # a step after the last evaluation would never be used
            _step(state, update, cur, proceed, project)
            if still is not None and still.numel() < len(x):
                state.idx = still
        stop.finish(model, state)
    return state


def _numpy32(a: torch.Tensor | None) -> np.ndarray | None:
    return None if a is None else a.detach().float().cpu().numpy()


def _result(state: AttackState, mode: str, eps: float, report_last: bool, mean: float | None,
            std: float | None, with_db_reference: bool, info: dict) -> AttackResult:
    """The :class:`AttackResult` of a finished state; ``report_last``: log the last evaluated iterate (paper mode)."""
    delta = state.best.detach()
    flat = delta.flatten(1)
    l2 = torch.sqrt((flat ** 2).sum(dim=1))  # float32, as the reference's torch.sqrt((d ** 2).sum())
    linf = flat.abs().amax(dim=1)
    n = len(delta)
    snr = (spectral_snr_db(state.x, delta, mean, std) if mean is not None and std is not None
           else np.full(n, np.nan))
    dbr = db_reference(state.x, delta) if with_db_reference else np.full(n, np.nan)
    adv_p, adv_b = (state.last_p, state.last_b) if report_last else (state.best_p, state.best_b)
    return AttackResult(
        mode=mode, eps=eps, iterations=state.iterations.cpu().numpy().astype(np.int64),
        converged=state.converged.cpu().numpy().astype(bool),
        adv_target=state.t.cpu().numpy().astype(np.float64) + 0.0,  # -0.0 -> 0.0
        delta=_numpy32(delta), clean_emotions=_numpy32(state.clean_p), adv_emotions=_numpy32(adv_p),
        clean_bottleneck=_numpy32(state.clean_b), adv_bottleneck=_numpy32(adv_b),
        l2=l2.double().cpu().numpy(), linf=linf.double().cpu().numpy(), snr_db=np.asarray(snr, np.float64),
        db_reference=np.asarray(dbr, np.float64), forward_passes=int(state.forward),
        backward_passes=int(state.backward), info=info)


def paper_attack(model: nn.Module, x, y, lr: float = 0.002, max_iters: int = 1000, *,
                 mean: float | None = None, std: float | None = None, with_db_reference: bool = False,
                 zero_threshold_unsets: bool = True) -> AttackResult:
    """Paper-mode attack (protocol §6.1) of a batch of excerpts; the loop is in the module docstring.

    The result's ``delta`` is ``best``; its ``adv_emotions`` are the predictions of the last evaluated iterate.

    Parameters
    ----------
    model : MERModel
        The attacked model (any module returning ``.emotions`` and ``.bottleneck``).
    x, y : array or Tensor (N, 1, T, F), (N, 8)
        Standardised inputs and emotion labels (divided by 10).
    lr, max_iters : float, int
        Adam learning rate and iteration budget (reference: 0.002 and 1000; 50 inside adversarial training).
    mean, std : float, optional
        Standardisation statistics, for the true SNR.
    with_db_reference : bool
        Also compute the reference's pseudo-SNR (slow).
    zero_threshold_unsets : bool
        Reproduce the reference's ``if not t``; keep ``True`` to reproduce the published runs.
    """
    if not isinstance(max_iters, (int, np.integer)) or max_iters < 1:
        raise MerError(f"max_iters must be a positive integer, got {max_iters!r}")
    if not (lr > 0):
        raise MerError(f"lr must be positive, got {lr!r}")
    xt, yt = _check_inputs(model, x, y)
    update = AdamUpdate(adam_tables(float(lr), int(max_iters), xt.device))
    state = _engine(model, xt, yt, update, CorrelationStop(zero_threshold_unsets), max_iters=int(max_iters),
                    project=None)
    info = {"mode": "paper", "lr": float(lr), "max_iters": int(max_iters)}
    return _result(state, "paper", math.nan, True, mean, std, with_db_reference, info)


def paper_adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 0.002,
                               max_iters: int = 50) -> tuple[torch.Tensor, int, int]:
    """Paper-mode adversarial examples ``x + best`` for adversarial training (protocol §5), kept on the model's device.

    No host copies, no metrics; the model is frozen in eval mode (:func:`frozen_model`) and restored. Arguments as in
    :func:`paper_attack` (default budget: 50 iterations, the adversarial-training value).

    Returns
    -------
    x_adv, forward_passes, backward_passes : Tensor (B, 1, T, F), int, int
        The examples (detached, same device and dtype as the model's inputs); the example passes spent.
    """
    xt, yt = _check_inputs(model, x, y)
    update = AdamUpdate(adam_tables(float(lr), int(max_iters), xt.device))
    state = _engine(model, xt, yt, update, CorrelationStop(zero_threshold_unsets=True), max_iters=int(max_iters),
                    project=None)
    return (xt + state.best).detach(), int(state.forward), int(state.backward)


def bounded_attack(model: nn.Module, x, y, eps: float, steps: int = 100, step_size: float | None = None,
                   update: str = "sign", stop: str = "fixed", lr: float = 0.002, *,
                   mean: float | None = None, std: float | None = None, with_db_reference: bool = False,
                   norm: str = "linf") -> AttackResult:
    """Bounded-mode attack (protocol §6.2): projection onto the ``norm`` ball of radius ``eps``.

    ``adv_emotions`` are the predictions of the returned example ``x + delta``; ``|delta| <= eps`` everywhere (L2:
    ``||delta||_2 <= eps`` up to float rounding).

    Parameters
    ----------
    model, x, y, mean, std, with_db_reference
        As in :func:`paper_attack`.
    eps : float
        Radius in normalised-spectrogram units (L-infinity: per bin; L2: of the whole excerpt).
    steps, step_size : int, float
        Iteration budget; step of the ``"sign"`` update (default :func:`default_step_size`).
    update, lr : str, float
        ``"sign"`` (PGD: ``sign(grad)`` for L-infinity, ``grad / ||grad||_2`` for L2) or ``"adam"`` (signed-gradient
        Adam at learning rate ``lr``; L-infinity only).
    stop : str
        ``"fixed"``: every step taken, final iterate returned (``iterations`` = steps); ``"correlation"``: the paper's
        rule, best iterate returned (``iterations`` = evaluated iterates).
    norm : str
        ``"linf"`` (mode ``"bounded"``) or ``"l2"`` (mode ``"bounded-l2"``).
    """
    eps = check_eps(eps)
    check_choice("norm", norm, NORMS)
    check_choice("update", update, ("sign", "adam") if norm == "linf" else ("sign",))
    check_choice("stop", stop, ("fixed", "correlation"))
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise MerError(f"steps must be a positive integer, got {steps!r}")
    if update == "sign":
        rate = default_step_size(eps, steps) if step_size is None else float(step_size)
    else:
        rate = float(lr)
    if not (rate > 0):
        raise MerError(f"step size / lr must be positive, got {rate!r}")
    xt, yt = _check_inputs(model, x, y)
    if update == "adam":
        rule = AdamUpdate(adam_tables(rate, int(steps), xt.device))
    else:
        rule = SignUpdate(rate) if norm == "linf" else L2Update(rate)
    stopping = FixedSteps() if stop == "fixed" else CorrelationStop(zero_threshold_unsets=False)
    project = project_linf if norm == "linf" else project_l2
    state = _engine(model, xt, yt, rule, stopping, max_iters=int(steps), project=lambda d: project(d, eps))
    mode = "bounded" if norm == "linf" else "bounded-l2"
    info = {"mode": mode, "eps": eps, "steps": int(steps), "update": update, "stop": stop,
            "step_size" if update == "sign" else "lr": rate}
    return _result(state, mode, eps, False, mean, std, with_db_reference, info)


def run_attack(model: nn.Module, x, y, mode: str = "paper", config: AttackConfig | None = None,
               eps: float | None = None, *, mean: float | None = None, std: float | None = None,
               batch_size: int | None = None, progress: bool = False) -> AttackResult:
    """Attack many excerpts in batches with the settings of ``config``; the results are concatenated in input order.

    Parameters
    ----------
    model, x, y
        As in :func:`paper_attack`.
    mode : str
        ``"paper"`` (``config.lr``, ``config.max_iters``), ``"bounded"`` (L-infinity ``eps``, the ``bounded_*``
        settings) or ``"bounded-l2"`` (L2 ``eps``, ``bounded_steps``, ``bounded_stop``; PGD at the default step size).
    config, eps : AttackConfig, optional; float
        The settings (default: the paper values); the radius, required in the bounded modes.
    mean, std : float, optional
        Standardisation statistics for the true SNR.
    batch_size, progress : int, optional; bool
        Overrides ``config.batch_size``; show a progress bar over batches.
    """
    config = config or AttackConfig()
    kind = attack_kind(mode)
    if kind.radii is not None and eps is None:
        raise MerError(f"{mode} mode needs eps")
    x = _as_tensor(x)
    y = _as_tensor(y)
    bs = int(batch_size or config.batch_size)
    parts = []
    batches = range(0, len(x), bs)
    for start in progress_bar(batches, total=len(batches), desc=f"{mode} attack", enabled=progress, leave=False,
                              unit="batch"):
        xb, yb = x[start:start + bs], y[start:start + bs]
        parts.append(kind.run(model, xb, yb, config, eps, mean=mean, std=std, with_db_reference=config.db_reference))
    result = AttackResult.concat(parts)
    result.mode = mode  # the registered name, whatever batch function it reuses
    return result


# --------------------------------------------------------------------------
# The attacks by name: a new spectrogram attack is one entry (and its batch function)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackKind:
    """One spectrogram attack of the study, by name.

    ``radii``: the profile's radii of a bounded attack (``None``: unbounded, no ``eps``); ``settings``: what changes
    its results (hashed into the result folder's name); ``run``: one batch; ``passes``: example passes of attacking
    ``n`` excerpts, an upper bound (``forward``, ``backward_input``; :mod:`mer_lib.attacks.protocol_cost`).
    """

    name: str
    radii: Callable[[AttackConfig], tuple[float, ...]] | None
    settings: Callable[[AttackConfig, float | None], dict]
    run: Callable[..., AttackResult]
    passes: Callable[[AttackConfig, int], dict[str, int]]


def _paper_settings(config: AttackConfig, eps: float | None) -> dict:
    return {"mode": "paper", "lr": config.lr, "max_iters": config.max_iters, "db_reference": config.db_reference,
            "zero_threshold_unsets": True}


def _linf_settings(config: AttackConfig, eps: float | None) -> dict:
    out = {"mode": "bounded", "eps": eps, "steps": config.bounded_steps, "update": config.bounded_update,
           "stop": config.bounded_stop, "db_reference": config.db_reference}
    if config.bounded_update == "sign":
        out["step_size"] = (default_step_size(eps, config.bounded_steps) if config.bounded_step_size is None
                            else float(config.bounded_step_size))
    else:
        out["lr"] = config.lr
    return out


def _l2_settings(config: AttackConfig, eps: float | None) -> dict:
    return {"mode": "bounded-l2", "eps": eps, "steps": config.bounded_steps, "update": "sign",
            "stop": config.bounded_stop, "db_reference": config.db_reference,
            "step_size": default_step_size(eps, config.bounded_steps)}


def _paper_batch(model, x, y, config: AttackConfig, eps, **common) -> AttackResult:
    return paper_attack(model, x, y, config.lr, config.max_iters, **common)


def _linf_batch(model, x, y, config: AttackConfig, eps, **common) -> AttackResult:
    return bounded_attack(model, x, y, eps, config.bounded_steps, config.bounded_step_size, config.bounded_update,
                          config.bounded_stop, config.lr, **common)


def _l2_batch(model, x, y, config: AttackConfig, eps, **common) -> AttackResult:
    return bounded_attack(model, x, y, eps, config.bounded_steps, None, "sign", config.bounded_stop, **common,
                          norm="l2")


def _paper_passes(config: AttackConfig, n: int) -> dict[str, int]:
    """``max_iters`` evaluations, a step after all but the last."""
    return {"forward": n * config.max_iters, "backward_input": n * (config.max_iters - 1)}


def _bounded_passes(config: AttackConfig, n: int) -> dict[str, int]:
    """``bounded_steps`` steps, each after an evaluation, and a last evaluation of the returned example."""
    return {"forward": n * (config.bounded_steps + 1), "backward_input": n * config.bounded_steps}


#: The spectrogram attacks by name (protocol §6): the paper's, and the bounded ones in an L-infinity and an L2 ball.
ATTACKS: dict[str, AttackKind] = {kind.name: kind for kind in (
    AttackKind("paper", None, _paper_settings, _paper_batch, _paper_passes),
    AttackKind("bounded", lambda config: tuple(config.eps_values), _linf_settings, _linf_batch, _bounded_passes),
    AttackKind("bounded-l2", lambda config: tuple(config.l2_eps_values), _l2_settings, _l2_batch, _bounded_passes),
)}


#: The bounded attack of each norm (:data:`NORMS`).
NORM_MODES: dict[str, str] = {"linf": "bounded", "l2": "bounded-l2"}


def attack_kind(mode: str) -> AttackKind:
    """The registered attack called ``mode`` (``MerError`` naming the registered ones for another name)."""
    try:
        return ATTACKS[mode]
    except KeyError:
        raise MerError(f"attack mode must be one of {list(ATTACKS)}, got {mode!r}") from None


def attack_table(result: AttackResult, numbers, y_true) -> pd.DataFrame:
    """One row per excerpt: the tidy columns of :mod:`mer_lib.attacks.logs` plus extras.

    Columns ``number, iterations, db_reference, norm, converged, adv_target, true_*, orig_*, new_*`` (what
    :func:`mer_lib.attacks.logs.write_attack_log` writes), then ``mode, eps, l2, linf, snr_db`` and, for bottleneck
    models, ``orig_bottleneck_*`` and ``new_bottleneck_*``. ``numbers``: excerpt IDs in the order of ``result``;
    ``y_true`` ``(N, 8)``: labels divided by 10 (the data table's float64 values keep the log's ``true-label`` exact).
    """
    numbers = np.asarray(numbers).astype(np.int64)
    y_true = np.asarray(y_true, dtype=np.float64)
    n = len(result)
    if len(numbers) != n or y_true.shape != (n, len(EMOTIONS)):
        raise MerError(f"attack_table: {n} results, {len(numbers)} numbers, labels of shape {y_true.shape}")
    table = pd.DataFrame({"number": numbers, "iterations": result.iterations.astype(np.int64),
                          "db_reference": result.db_reference, "norm": result.l2,
                          "converged": result.converged.astype(bool), "adv_target": result.adv_target})
    parts = [table,
             pd.DataFrame(y_true, columns=tidy_columns("true")),
             pd.DataFrame(result.clean_emotions.astype(np.float64), columns=tidy_columns("orig")),
             pd.DataFrame(result.adv_emotions.astype(np.float64), columns=tidy_columns("new")),
             pd.DataFrame({"mode": result.mode, "eps": result.eps, "l2": result.l2, "linf": result.linf,
                           "snr_db": result.snr_db})]
    if result.clean_bottleneck is not None:
        parts.append(pd.DataFrame(result.clean_bottleneck.astype(np.float64), columns=bottleneck_columns("orig")))
        parts.append(pd.DataFrame(result.adv_bottleneck.astype(np.float64), columns=bottleneck_columns("new")))
    return pd.concat(parts, axis=1)
