"""Do explanations see the attack? Segment-grid explanations of attacked excerpts and their veracity (notebook 11).

Praher et al. (ISMIR 2021) explained adversarial examples, whose perturbation is known, with LIME over a grid of
time-frequency segments, and asked whether the perturbation put back only inside the top segments re-creates the
attack. For regression that becomes a share: :func:`recovery` is the part of the attack's damage (the rise of the
excerpt's error) that the perturbation restricted to the k chosen segments (:func:`reinsert`) re-creates, for the
segments an explanation ranks first, the oracle's (the most perturbation energy, :func:`segment_energy`) and random
ones. A recovery is a ratio of two damages of the same model, so dividing the damage by the model's clean
prediction spread (the gain-free measure) leaves it unchanged. Protocol §11.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from tqdm import TqdmWarning

from mer_lib.errors import MerError

__all__ = ["GRID", "METHODS", "segment_mask", "segment_energy", "top_k", "random_segments", "reinsert", "recovery",
           "top_overlap", "explain", "error_score", "direction_score"]

#: Time x frequency segments of the grid (Praher et al. 2021: 5 in time, 4 in frequency).
GRID: tuple[int, int] = (5, 4)
#: Attribution methods of :func:`explain`: captum's LIME (ridge surrogate, as the ``lime`` package), Kernel SHAP
#: and integrated gradients summed over each segment.
METHODS: tuple[str, ...] = ("lime", "kernel_shap", "integrated_gradients")

#: ``score(inputs (P, 1, T, F), target (1, K)) -> (P,)``: the scalar an explanation explains.
Score = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def segment_mask(shape: tuple[int, int], grid: tuple[int, int] = GRID) -> np.ndarray:
    """Segment ids ``(T, F)`` of a ``grid[0]`` (time) x ``grid[1]`` (frequency) grid, time-major, near-equal sizes.

    Segment ``i * grid[1] + j`` is the ``i``-th time slice and ``j``-th band slice (``numpy.array_split`` bounds).
    """
    t, f = (int(v) for v in shape)
    nt, nf = (int(v) for v in grid)
    if nt < 1 or nf < 1 or nt > t or nf > f:
        raise MerError(f"segment_mask: a grid of {grid} segments does not fit a spectrogram of {shape}")
    rows = np.repeat(np.arange(nt), [len(a) for a in np.array_split(np.arange(t), nt)])
    cols = np.repeat(np.arange(nf), [len(a) for a in np.array_split(np.arange(f), nf)])
    return rows[:, None] * nf + cols[None, :]


def _check(x: np.ndarray, mask: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[2:] != mask.shape:
        raise MerError(f"{what}: inputs (N, 1, {mask.shape[0]}, {mask.shape[1]}) expected, got {x.shape}")
    return x


def segment_energy(delta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Sum of squares of each perturbation ``(N, 1, T, F)`` in each segment of ``mask``: ``(N, S)``."""
    d = _check(delta, mask, "segment_energy").astype(np.float64)
    ids = mask.reshape(-1)
    flat = (d ** 2).reshape(len(d), -1)
    return np.stack([np.bincount(ids, weights=row, minlength=int(mask.max()) + 1) for row in flat])


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``(N, S)``: the ``k`` highest scores of each row (ties: the lower segment id first)."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or not 1 <= k <= s.shape[1]:
        raise MerError(f"top_k: scores (N, S) and 1 <= k <= S expected, got {s.shape} and k={k}")
    if np.isnan(s).any():
        raise MerError("top_k: NaN scores")
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    chosen = np.zeros(s.shape, bool)
    np.put_along_axis(chosen, order, True, axis=1)
    return chosen


def random_segments(n: int, n_segments: int, k: int, seed: int) -> np.ndarray:
    """Boolean ``(n, n_segments)``: ``k`` segments per row drawn without replacement (seeded)."""
    return top_k(np.random.default_rng(seed).random((n, n_segments)), k)


def reinsert(clean: np.ndarray, adversarial: np.ndarray, mask: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The clean inputs with the adversarial perturbation put back only inside each row's ``chosen`` segments."""
    c = _check(clean, mask, "reinsert")
    a = _check(adversarial, mask, "reinsert")
    chosen = np.asarray(chosen, bool)
    if a.shape != c.shape or chosen.shape != (len(c), int(mask.max()) + 1):
        raise MerError(f"reinsert: clean {c.shape}, adversarial {a.shape} and chosen (N, S) {chosen.shape} disagree")
    keep = chosen[:, mask][:, None]  # (N, 1, T, F)
    return np.where(keep, a, c).astype(c.dtype)


def recovery(err_clean: np.ndarray, err_adv: np.ndarray, err_partial: np.ndarray) -> np.ndarray:
    """Share of the attack's damage re-created: ``(partial - clean) / (adv - clean)``; NaN where the attack did none.

    1 means the chosen segments carry the whole attack; 0 none of it; it can leave [0, 1] (segments interact).
    """
    c, a, p = (np.asarray(v, np.float64) for v in (err_clean, err_adv, err_partial))
    damage = a - c
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(damage > 0, (p - c) / damage, np.nan)


def top_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per row, the share of the ``k`` top segments of scores ``a`` that are also among those of ``b``."""
    return (top_k(a, k) & top_k(b, k)).sum(axis=1) / k


def error_score(model: torch.nn.Module) -> Score:
    """The excerpt's error, mean absolute error of the emotions against ``target`` ``(1, 8)``: what the attack raised."""
    return lambda z, target: (model(z).emotions - target).abs().mean(dim=1)


def direction_score(model: torch.nn.Module) -> Score:
    """The bottleneck's activations projected on ``target`` ``(1, 7)`` (e.g. +-1 on the unit an attack moved most)."""
    return lambda z, target: (model(z).bottleneck * target).sum(dim=1)


def explain(score: Score, x: np.ndarray, targets: np.ndarray, mask: np.ndarray, method: str = "lime",
            n_samples: int = 256, seed: int = 0, baseline: float = 0.0, batch: int = 64) -> np.ndarray:
    """Segment attributions ``(N, S)`` of ``score`` for each input ``x`` ``(N, 1, T, F)`` (its target: a row of ``targets``).

    Parameters
    ----------
    method : str
        ``"lime"`` (captum ``Lime`` with a ridge surrogate, alpha 1, as the ``lime`` package), ``"kernel_shap"``
        (captum ``KernelShap``) or ``"integrated_gradients"`` (captum, summed over each segment).
    n_samples : int
        Perturbed samples per excerpt (LIME, Kernel SHAP) or integration steps.
    seed : int
        Seeds the sampling of each excerpt (``seed`` and the excerpt's position), so reruns are identical.
    baseline : float
        The value a switched-off segment takes (0: the training mean of every bin of the standardised input).
    """
    # captum is imported here, not with the module, so that importing mer_lib.analysis stays fast; its progress
    # module imports tqdm.auto, which warns in a notebook kernel without ipywidgets (captum draws no bar here)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import IntegratedGradients, KernelShap, Lime

    if method not in METHODS:
        raise MerError(f"explain: method must be one of {METHODS}, got {method!r}")
    xs = torch.as_tensor(np.asarray(_check(x, mask, "explain"), np.float32))
    ts = torch.as_tensor(np.asarray(targets, np.float32))
    if len(ts) != len(xs):
        raise MerError(f"explain: {len(xs)} inputs but {len(ts)} targets")
    n_seg = int(mask.max()) + 1
    fmask = torch.as_tensor(mask, dtype=torch.long)[None, None]
    out = np.empty((len(xs), n_seg))
    for i in range(len(xs)):
        target = ts[i:i + 1]

        def forward(z: torch.Tensor) -> torch.Tensor:
            return score(z, target)

        with torch.random.fork_rng():
            torch.manual_seed(seed * 1_000_003 + i)
            if method == "integrated_gradients":
                a = IntegratedGradients(forward).attribute(xs[i:i + 1], baselines=baseline, n_steps=n_samples,
                                                           internal_batch_size=batch)
                out[i] = np.bincount(mask.reshape(-1), weights=a.detach().double().numpy().reshape(-1),
                                     minlength=n_seg)
            else:
                explainer = (Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0)) if method == "lime"
                             else KernelShap(forward))
                a = explainer.attribute(xs[i:i + 1], baselines=baseline, feature_mask=fmask, n_samples=n_samples,
                                        perturbations_per_eval=batch, return_input_shape=False)
                out[i] = a.detach().double().numpy().reshape(-1)
    return out
