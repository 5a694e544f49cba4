"""The white-box attack of the study (protocol §6): a batched engine, paper mode and bounded mode.

One engine attacks a whole batch of excerpts at once. Every example carries
its own state: perturbation ``delta``, Adam moments and step count, the
correlation threshold ``t``, the best perturbation so far, its iteration
count and a converged flag. Examples that are done are frozen (they are no
longer fed through the model and their state does not advance), so a batch
gives exactly the per-example results of attacking one excerpt at a time.
During an attack the model is in eval mode and its parameters do not require
gradients (both restored afterwards); the only host synchronisation per
iteration is the count of still-active examples (none at all in bounded mode
with a fixed number of steps).

Paper mode (:func:`paper_attack`, protocol §6.1) reproduces the reference
attack, bugs included. Per excerpt ``x`` with labels ``y``::

    delta = 0; Adam(lr=0.002, betas=(0.9, 0.999), eps=1e-8); best = delta; t unset
    for it = 1 .. max_iters:
        p = f(x + delta);  r = Pearson(y, p) over the 8 emotions (float64)
        if t unset: t = ceil(10 r) / 10
        if r <= t:
            best = delta
            if t >= -0.9: t = t - 0.1          (float64: -0.8999999999999998 ...)
            else: converged; stop              (no step at this iteration)
        Adam step on delta with gradient -sign(d MSE(p, y) / d delta)   (ascent)
    (no clamp: the reference's clamp result is discarded, delta is unbounded)

Details that decide the logged numbers:

* ``iterations`` is the number of evaluated iterates: the iteration at which
  the example converged, else ``max_iters``. A converged example took
  ``iterations - 1`` Adam steps;
* the logged adversarial prediction (``new_*``) is that of the **last
  evaluated iterate**, not of ``best``; ``norm`` is the L2 norm of ``best``
  and the adversarial example is ``x + best``;
* ``t`` counts as unset while it is ``None`` **or exactly 0.0**: the reference
  tests ``if not t``, so after ``0.1 - 0.1 == 0.0`` (or an initial
  ``ceil(10 r) / 10 == 0``) the threshold is re-initialised from the current
  ``r`` at the next iteration. protocol §6.1 does not mention this; paper mode
  reproduces it (``zero_threshold_unsets=True``), bounded mode does not;
* the reference takes an Adam step after the last iteration too; its result
  is never evaluated or returned, so the engine skips it (identical output,
  one backward pass less per example);
* Adam is elementwise, with per-example bias correction (each example's own
  step count); the update replicates ``torch.optim.Adam``'s arithmetic op by
  op, so it is bit-identical to one optimiser per excerpt;
* a correlation that is undefined (constant predictions) leaves ``t`` unset
  and never counts as ``r <= t`` (the reference would crash on ``ceil(nan)``).

Bounded mode (:func:`bounded_attack`, protocol §6.2): after every step delta is
projected onto the L-infinity ball of radius ``eps`` (normalised-spectrogram
units). The step is either a signed-gradient step of size ``step_size``
(PGD, default ``2.5 * eps / steps``) or the paper's signed Adam step. It runs
a fixed number of steps (returns the final iterate, evaluated by one more
forward pass) or uses the correlation stopping rule (returns the best
iterate). The reported adversarial prediction is always that of the returned
adversarial example.

Per example, :class:`AttackResult` holds the iterations, converged flag,
final threshold, the returned perturbation, its L2 and L-infinity norm, the
true spectral SNR (:func:`spectral_snr_db`), clean and adversarial
predictions and bottleneck activations, and optionally the reference's
pseudo-SNR :func:`db_reference`. :func:`attack_table` turns it into the tidy
table of :mod:`mer_lib.attack_logs` (plus extra columns).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from mer_lib.attacks.logs import bottleneck_columns, tidy_columns
from mer_lib.config import EMOTIONS, SAMPLE_RATE, AttackConfig, check_choice, check_eps
from mer_lib.errors import MerError

#: Bumped whenever a code change alters attack results; part of every attack artifact's hash.
ATTACK_VERSION: int = 1


#: Adam defaults of ``torch.optim.Adam`` (the reference uses them).
ADAM_BETAS: tuple[float, float] = (0.9, 0.999)


ADAM_EPS: float = 1e-8


MODES: tuple[str, ...] = ("paper", "bounded")


@dataclass
class AttackResult:
    """Per-example outcome of an attack (numpy arrays, first axis = example).

    Attributes
    ----------
    mode : str
        ``"paper"`` or ``"bounded"``.
    eps : float
        L-infinity radius (``nan`` in paper mode).
    iterations : int64 (N,)
        Evaluated iterates (paper mode, correlation stopping) or steps taken (fixed steps).
    converged : bool (N,)
        Stopped by the correlation rule before the budget.
    adv_target : float64 (N,)
        Correlation threshold ``t`` at the end (``nan`` if none).
    delta : float32 (N, 1, T, F)
        The returned perturbation (paper: ``best``); the adversarial example is ``x + delta``.
    clean_emotions, adv_emotions : float32 (N, 8)
        Clean predictions and the logged adversarial predictions (paper: last
        evaluated iterate; bounded: the returned example).
    clean_bottleneck, adv_bottleneck : float32 (N, 7) or None
        Bottleneck activations of bottleneck models, same iterates.
    l2, linf : float64 (N,)
        Norms of ``delta`` (``l2`` is the log's ``norm``, computed in float32 as the reference does).
    snr_db : float64 (N,)
        True spectral SNR (:func:`spectral_snr_db`); ``nan`` without standardisation statistics.
    db_reference : float64 (N,)
        The reference's pseudo-SNR (:func:`db_reference`); ``nan`` unless requested.
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
    """Pearson r between matching rows of ``a`` and ``b`` ``(B, K)``, in float64, clipped to [-1, 1].

    Computed like ``scipy.stats.pearsonr`` (centre, normalise, dot); ``nan``
    for a constant row.
    """
    a = a.double()
    b = b.double()
    am = a - a.mean(dim=1, keepdim=True)
    bm = b - b.mean(dim=1, keepdim=True)
    r = ((am / am.norm(dim=1, keepdim=True)) * (bm / bm.norm(dim=1, keepdim=True))).sum(dim=1)
    return r.clamp(-1.0, 1.0)


def _adam_tables(lr: float, steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``-lr / (1 - b1**k)`` and ``sqrt(1 - b2**k)`` for k = 0..steps, computed in Python floats
    exactly as ``torch.optim.Adam`` does, then as float32 (how its kernels use them)."""
    b1, b2 = ADAM_BETAS
    neg = [0.0] + [-(lr / (1 - b1 ** k)) for k in range(1, steps + 1)]
    bc2 = [1.0] + [(1 - b2 ** k) ** 0.5 for k in range(1, steps + 1)]
    as32 = lambda v: torch.tensor(v, dtype=torch.float64).to(device=device, dtype=torch.float32)  # noqa: E731
    return as32(neg), as32(bc2)


def spectral_snr_db(x, delta, mean: float, std: float) -> np.ndarray:
    """True spectral SNR in dB of perturbations of standardised log spectrograms.

    The linear-magnitude spectrograms are recovered by undoing the
    standardisation and the ``log10(1 + S)`` of the front end
    (``S = 10 ** (x * std + mean) - 1``); the SNR is
    ``10 log10(sum S_clean^2 / sum (S_adv - S_clean)^2)`` per example, in
    float64. An unbounded perturbation can push ``S_adv`` below zero (not a
    realisable magnitude); it is not clipped. ``inf`` for a zero perturbation.

    Parameters
    ----------
    x, delta : array or Tensor (N, ...)
        Clean standardised inputs and perturbations.
    mean, std : float
        The global standardisation statistics (``PreparedData.mean``, ``.std``).

    Returns
    -------
    ndarray (N,)
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
    """The reference's pseudo-SNR ("db" of the published logs), per example.

    Our reading of protocol §6.1 (checked against the published values' range):
    each normalised log spectrogram ``(T=313, F=149)`` and its perturbation are
    passed to ``librosa.feature.inverse.mel_to_stft(..., sr=22050)`` as if they
    were a 313-band mel power spectrogram with 149 frames (librosa defaults:
    ``n_fft=2048``, Slaney mel filters, ``power=2``; the inversion is a
    non-negative least-squares fit, so negative inputs are clipped away), both
    are converted with ``librosa.amplitude_to_db`` (``ref=1``, ``amin=1e-5``,
    ``top_db=80``) and the mean of ``db_x - db_delta`` over all bins is the
    value. It is not an SNR (the spectrogram is neither mel nor power, and the
    dB values are not energy ratios). A zero perturbation gives
    ``mean(db_x) + 100``. Uncertain: the exact librosa version of the
    reference (its NNLS solver and defaults may have changed); we use the
    project's pinned librosa. Slow (an L-BFGS NNLS per call, several seconds).

    Parameters
    ----------
    x, delta : array or Tensor (N, 1, T, F)
        Clean standardised inputs and perturbations.

    Returns
    -------
    ndarray (N,) float64
    """
    import librosa  # heavy import, only when asked for

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
# The engine
# --------------------------------------------------------------------------
def _engine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_iters: int, update: str, rate: float,
            eps: float | None, stop: str, zero_threshold_unsets: bool, report: str,
            channels_last: bool) -> dict:
    """The batched attack loop; returns tensors on the model's device (see the module docstring).

    update : "adam" (signed-gradient Adam, lr ``rate``) or "sign" (``delta += rate * sign(grad)``)
    stop : "correlation" (paper stopping rule) or "fixed" (``max_iters`` steps, no early stop)
    report : "last" (paper: prediction of the last evaluated iterate, return ``best``),
             "returned" (prediction of the returned example)
    """
    n = x.shape[0]
    dev = x.device
    use_rule = stop == "correlation"
    delta = torch.zeros_like(x)
    if update == "adam":
        m = torch.zeros_like(x)
        v = torch.zeros_like(x)
        neg_step, bc2_sqrt = _adam_tables(rate, max_iters, dev)
    steps = torch.zeros(n, dtype=torch.long, device=dev)
    best = torch.zeros_like(x) if use_rule else None
    t = torch.full((n,), math.nan, dtype=torch.float64, device=dev)
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    converged = torch.zeros(n, dtype=torch.bool, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    last_p = torch.zeros(n, len(EMOTIONS), device=dev)
    best_p = torch.zeros(n, len(EMOTIONS), device=dev)
    clean_p = last_b = best_b = clean_b = None
    forward = backward = 0
    b1, b2 = ADAM_BETAS
    idx = None  # None: every example is active
    if eps is not None:  # the largest float32 not above eps, so that |delta| <= eps holds exactly
        bound = np.float32(eps)
        eps = float(np.nextafter(bound, np.float32(0)) if float(bound) > eps else bound)

    def model_out(inp):
        if channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return model(inp)

    def take(a):
        return a if idx is None else a.index_select(0, idx)

    def put(dst, values, mask=None):
        """dst[active] = values (where mask, if given)."""
        if mask is not None:
            shape = (-1,) + (1,) * (values.ndim - 1)
            values = torch.where(mask.view(shape), values, take(dst))
        if idx is None:
            return values.clone() if values is dst else values
        return dst.index_copy(0, idx, values)

    for it in range(1, max_iters + 1):
        d = take(delta).detach().requires_grad_(True)
        out = model_out(take(x) + d)
        p = out.emotions
        forward += d.shape[0]
        pd_ = p.detach()
        bott = out.bottleneck.detach() if out.bottleneck is not None else None
        if it == 1:
            clean_p = pd_.clone()
            if bott is not None:
                clean_b = bott.clone()
                last_b = torch.zeros_like(bott)
                best_b = torch.zeros_like(bott)
        last_p = put(last_p, pd_)
        if bott is not None:
            last_b = put(last_b, bott)
        iterations = put(iterations, torch.full((d.shape[0],), it, dtype=torch.long, device=dev))

        proceed = None  # examples that take a step after this iteration (None: all)
        if use_rule:
            r = pearson_rows(take(y), pd_)
            tt = take(t)
            unset = torch.isnan(tt)
            if zero_threshold_unsets:
                unset = unset | (tt == 0.0)
            tt = torch.where(unset, torch.ceil(r * 10.0) / 10.0, tt)
            hit = r <= tt  # False for nan
            lower = hit & (tt >= -0.9)
            done = hit & ~lower
            t = put(t, torch.where(lower, tt - 0.1, tt))
            best = put(best, d.detach(), hit)
            best_p = put(best_p, pd_, hit)
            if bott is not None:
                best_b = put(best_b, bott, hit)
            converged = put(converged, done | take(converged))
            proceed = ~done
            active = put(active, proceed)
            still = active.nonzero().squeeze(1)  # the one host sync per iteration
            n_active = still.numel()
        else:
            n_active = n
        last_iteration = it == max_iters
        if n_active == 0 or (last_iteration and stop == "correlation"):
            break  # a step after the last evaluation would never be used

        loss = (p - take(y)).pow(2).mean(dim=1).sum()
        (grad,) = torch.autograd.grad(loss, d)
        backward += d.shape[0]
        ascent = torch.sign(grad).neg_()  # gradient ascent on the MSE, sign of the gradient
        cur = d.detach()
        if update == "adam":
            st = take(steps) + 1
            mm = torch.lerp(take(m), ascent, 1 - b1)
            vv = take(v).mul(b2).addcmul_(ascent, ascent, value=1 - b2)
            denom = (vv.sqrt() / bc2_sqrt[st].view(-1, 1, 1, 1)).add_(ADAM_EPS)
            new = cur + (neg_step[st].view(-1, 1, 1, 1) * mm) / denom
            m = put(m, mm, proceed)
            v = put(v, vv, proceed)
        else:
            st = take(steps) + 1
            new = cur - rate * ascent  # descent step on the negated gradient = ascent on the loss
        if eps is not None:
            new = new.clamp(-eps, eps)
        delta = put(delta, new, proceed)
        steps = put(steps, st, proceed)
        if use_rule and n_active < n:
            idx = still

    if stop == "fixed":
        with torch.no_grad():
            out = model_out(x + delta)
        forward += n
        best = delta
        best_p = out.emotions.detach()
        best_b = out.bottleneck.detach() if out.bottleneck is not None else None
        iterations = steps.clone()
    returned = best
    if report == "last":
        adv_p, adv_b = last_p, last_b
    else:
        adv_p, adv_b = best_p, best_b
    return {"delta": returned, "iterations": iterations, "converged": converged, "adv_target": t,
            "clean_emotions": clean_p, "adv_emotions": adv_p, "clean_bottleneck": clean_b,
            "adv_bottleneck": adv_b, "forward": forward, "backward": backward}


def _result(raw: dict, x: torch.Tensor, mode: str, eps: float, mean: float | None, std: float | None,
            with_db_reference: bool, info: dict) -> AttackResult:
    delta = raw["delta"].detach()
    flat = delta.flatten(1)
    l2 = torch.sqrt((flat ** 2).sum(dim=1))  # float32, as the reference's torch.sqrt((d ** 2).sum())
    linf = flat.abs().amax(dim=1)
    n = len(delta)
    snr = (spectral_snr_db(x, delta, mean, std) if mean is not None and std is not None
           else np.full(n, np.nan))
    dbr = db_reference(x, delta) if with_db_reference else np.full(n, np.nan)
    np32 = lambda a: None if a is None else a.detach().float().cpu().numpy()  # noqa: E731
    return AttackResult(
        mode=mode, eps=eps, iterations=raw["iterations"].cpu().numpy().astype(np.int64),
        converged=raw["converged"].cpu().numpy().astype(bool),
        adv_target=raw["adv_target"].cpu().numpy().astype(np.float64) + 0.0,  # -0.0 -> 0.0
        delta=np32(delta), clean_emotions=np32(raw["clean_emotions"]), adv_emotions=np32(raw["adv_emotions"]),
        clean_bottleneck=np32(raw["clean_bottleneck"]), adv_bottleneck=np32(raw["adv_bottleneck"]),
        l2=l2.double().cpu().numpy(), linf=linf.double().cpu().numpy(), snr_db=np.asarray(snr, np.float64),
        db_reference=np.asarray(dbr, np.float64), forward_passes=int(raw["forward"]),
        backward_passes=int(raw["backward"]), info=info)


def paper_attack(model: nn.Module, x, y, lr: float = 0.002, max_iters: int = 1000, *,
                 mean: float | None = None, std: float | None = None, with_db_reference: bool = False,
                 channels_last: bool = False, zero_threshold_unsets: bool = True) -> AttackResult:
    """Paper-mode attack (protocol §6.1) of a batch of excerpts; see the module docstring.

    Parameters
    ----------
    model : MERModel
        The attacked model (any module returning ``.emotions`` and ``.bottleneck``).
    x : array or Tensor (N, 1, T, F)
        Standardised inputs.
    y : array or Tensor (N, 8)
        Emotion labels (divided by 10).
    lr : float
        Adam learning rate (reference: 0.002).
    max_iters : int
        Iteration budget (reference: 1000; 50 inside adversarial training).
    mean, std : float, optional
        Standardisation statistics, for the true SNR.
    with_db_reference : bool
        Also compute the reference's pseudo-SNR (slow).
    channels_last : bool
        Feed channels-last inputs to the model.
    zero_threshold_unsets : bool
        Reproduce the reference's ``if not t`` (a threshold of exactly 0.0
        counts as unset). Keep ``True`` to reproduce the published runs.

    Returns
    -------
    AttackResult
        ``delta`` = ``best``; ``adv_emotions`` = prediction of the last evaluated iterate.
    """
    if not isinstance(max_iters, (int, np.integer)) or max_iters < 1:
        raise MerError(f"max_iters must be a positive integer, got {max_iters!r}")
    if not (lr > 0):
        raise MerError(f"lr must be positive, got {lr!r}")
    xt, yt = _check_inputs(model, x, y)
    with frozen_model(model):
        raw = _engine(model, xt, yt, max_iters=int(max_iters), update="adam", rate=float(lr), eps=None,
                      stop="correlation", zero_threshold_unsets=zero_threshold_unsets, report="last",
                      channels_last=channels_last)
    info = {"mode": "paper", "lr": float(lr), "max_iters": int(max_iters)}
    return _result(raw, xt, "paper", math.nan, mean, std, with_db_reference, info)


def paper_adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 0.002,
                               max_iters: int = 50, channels_last: bool = False) -> tuple[torch.Tensor, int, int]:
    """Paper-mode adversarial examples ``x + best`` of a batch, kept on the model's device.

    What adversarial training needs (protocol §5): no host copies, no metrics.
    The model is put in eval mode (and restored) by :func:`frozen_model`.

    Returns
    -------
    x_adv : Tensor (B, 1, T, F)
        Detached, same device and dtype as the model's inputs.
    forward_passes, backward_passes : int
        Example passes spent.
    """
    xt, yt = _check_inputs(model, x, y)
    with frozen_model(model):
        raw = _engine(model, xt, yt, max_iters=int(max_iters), update="adam", rate=float(lr), eps=None,
                      stop="correlation", zero_threshold_unsets=True, report="last",
                      channels_last=channels_last)
    return (xt + raw["delta"]).detach(), int(raw["forward"]), int(raw["backward"])


def bounded_attack(model: nn.Module, x, y, eps: float, steps: int = 100, step_size: float | None = None,
                   update: str = "sign", stop: str = "fixed", lr: float = 0.002, *,
                   mean: float | None = None, std: float | None = None, with_db_reference: bool = False,
                   channels_last: bool = False) -> AttackResult:
    """Bounded-mode attack (protocol §6.2): projection onto the L-infinity ball of radius ``eps``.

    Parameters
    ----------
    model, x, y
        As in :func:`paper_attack`.
    eps : float
        L-infinity radius in normalised-spectrogram units.
    steps : int
        Iteration budget.
    step_size : float, optional
        Step of the ``"sign"`` update (default ``2.5 * eps / steps``).
    update : str
        ``"sign"`` (PGD) or ``"adam"`` (signed-gradient Adam with ``lr``).
    stop : str
        ``"fixed"``: every step is taken and the final iterate is returned
        (``iterations`` = steps); ``"correlation"``: the paper's stopping rule,
        the best iterate is returned (``iterations`` = evaluated iterates).
    lr : float
        Adam learning rate of ``update="adam"``.
    mean, std, with_db_reference, channels_last
        As in :func:`paper_attack`.

    Returns
    -------
    AttackResult
        ``adv_emotions`` is the prediction of the returned example ``x + delta``;
        ``|delta| <= eps`` everywhere.
    """
    eps = check_eps(eps)
    check_choice("update", update, ("sign", "adam"))
    check_choice("stop", stop, ("fixed", "correlation"))
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise MerError(f"steps must be a positive integer, got {steps!r}")
    if update == "sign":
        rate = 2.5 * eps / steps if step_size is None else float(step_size)
    else:
        rate = float(lr)
    if not (rate > 0):
        raise MerError(f"step size / lr must be positive, got {rate!r}")
    xt, yt = _check_inputs(model, x, y)
    with frozen_model(model):
        raw = _engine(model, xt, yt, max_iters=int(steps), update=update, rate=rate, eps=eps, stop=stop,
                      zero_threshold_unsets=False, report="returned", channels_last=channels_last)
    info = {"mode": "bounded", "eps": eps, "steps": int(steps), "update": update, "stop": stop,
            "step_size" if update == "sign" else "lr": rate}
    return _result(raw, xt, "bounded", eps, mean, std, with_db_reference, info)


def run_attack(model: nn.Module, x, y, mode: str = "paper", config: AttackConfig | None = None,
               eps: float | None = None, *, mean: float | None = None, std: float | None = None,
               batch_size: int | None = None, progress: bool = False) -> AttackResult:
    """Attack many excerpts in batches of ``config.batch_size`` with the settings of ``config``.

    Parameters
    ----------
    model : MERModel
    x, y : arrays (N, 1, T, F), (N, 8)
    mode : str
        ``"paper"`` (``config.lr``, ``config.max_iters``) or ``"bounded"``
        (``eps`` and the ``bounded_*`` settings).
    config : AttackConfig, optional
        Default: the paper values.
    eps : float
        Required in bounded mode.
    mean, std : float, optional
        Standardisation statistics for the true SNR.
    batch_size : int, optional
        Overrides ``config.batch_size``.
    progress : bool
        Show a progress bar over batches.
    """
    from tqdm import tqdm

    config = config or AttackConfig()
    check_choice("mode", mode, MODES)
    if mode == "bounded" and eps is None:
        raise MerError("bounded mode needs eps")
    x = _as_tensor(x)
    y = _as_tensor(y)
    bs = int(batch_size or config.batch_size)
    parts = []
    for start in tqdm(range(0, len(x), bs), disable=not progress, desc=f"{mode} attack", leave=False):
        xb, yb = x[start:start + bs], y[start:start + bs]
        common = dict(mean=mean, std=std, with_db_reference=config.db_reference,
                      channels_last=config.channels_last)
        if mode == "paper":
            parts.append(paper_attack(model, xb, yb, config.lr, config.max_iters, **common))
        else:
            parts.append(bounded_attack(model, xb, yb, eps, config.bounded_steps, config.bounded_step_size,
                                        config.bounded_update, config.bounded_stop, config.lr, **common))
    return AttackResult.concat(parts)


def attack_table(result: AttackResult, numbers, y_true) -> pd.DataFrame:
    """One row per excerpt: the tidy columns of :mod:`mer_lib.attack_logs` plus extras.

    Columns: ``number, iterations, db_reference, norm, converged, adv_target,
    true_*, orig_*, new_*`` (what :func:`mer_lib.attack_logs.write_attack_log`
    writes in the published format), then ``mode, eps, l2, linf, snr_db`` and,
    for bottleneck models, ``orig_bottleneck_*`` and ``new_bottleneck_*``.

    Parameters
    ----------
    result : AttackResult
    numbers : sequence of int
        Excerpt IDs, in the order of ``result``.
    y_true : array (N, 8)
        Labels (divided by 10). Pass the float64 values of the data table to
        keep the published log's ``true-label`` column exact.
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
