"""Ridge refit of a trained model's linear head layers: the scaled-down profiles' last step (protocol §5).

With ``TrainConfig.refit_head`` (quick and smoke; off in ``paper``), :func:`mer_lib.models.stage.train_system` calls
:func:`refit_head` once the best epoch is restored: on the clean training excerpts, in eval mode with the backbone
frozen, every head layer that has a target becomes its ridge-regression solution (float64, deterministic). The
penalty is fixed (``TrainConfig.refit_ridge``, relative to the inputs' variance) and sets the head's gain, which is why
notebook 05 sweeps it (:mod:`mer_lib.models.heads`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mer_lib.errors import MerError
from mer_lib.models.nets import MERModel
from mer_lib.models.train import EVAL_BATCH, resolve_device


@torch.no_grad()
def _batched(fn, model: MERModel, x, device, batch_size: int) -> np.ndarray:
    device = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    out = [fn(x[i:i + batch_size].to(device)).double().cpu().numpy()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return np.concatenate(out)


def head_inputs(model: MERModel, x, device: str | torch.device | None = None,
                batch_size: int = EVAL_BATCH) -> np.ndarray:
    """What the emotion layer reads, in eval mode, float64: the bottleneck ``(N, 7)`` or the pooled features ``(N, D)``.

    Parameters as for :func:`mer_lib.models.train.predict`.
    """
    return _batched(model.head_input, model, x, device, batch_size)


def backbone_features(model: MERModel, x, device: str | torch.device | None = None,
                      batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The pooled backbone features ``(N, D)``, float64, in eval mode (parameters as :func:`head_inputs`)."""
    return _batched(model.backbone, model, x, device, batch_size)


def least_squares_layer(inputs: np.ndarray, targets: np.ndarray,
                        ridge: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of the linear layer that best maps ``inputs`` to ``targets`` in squared error.

    Parameters
    ----------
    inputs, targets : ndarray (N, k), (N, m)
    ridge : float
        Relative L2 penalty ``r >= 0`` on the weight (not the bias): minimises
        ``|Y - X W^T - b|^2 + r * N * mean(var(X)) * |W|^2``, so ``r`` does not depend on the inputs' scale.
        0: plain least squares (minimum-norm where the inputs are rank-deficient).

    Returns
    -------
    weight : ndarray (m, k)
        Solved on the centred data (constant input columns, e.g. dead ReLU features, get weight 0).
    bias : ndarray (m,)
        ``mean(targets) - weight @ mean(inputs)``.

    Raises
    ------
    MerError
        On mismatched shapes, fewer than 2 rows, a non-finite value or a negative ``ridge``.
    """
    x, y = np.asarray(inputs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise MerError(f"least squares needs inputs (N, k) and targets (N, m) with the same N >= 2, "
                       f"got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise MerError("least squares: inputs and targets must be finite")
    if not (isinstance(ridge, (int, float, np.floating)) and math.isfinite(ridge) and ridge >= 0):
        raise MerError(f"least squares: ridge must be a number >= 0, got {ridge!r}")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    penalty = float(ridge) * len(x) * float(xc.var(axis=0).mean())
    if penalty > 0:
        weight = np.linalg.solve(xc.T @ xc + penalty * np.eye(x.shape[1]), xc.T @ yc).T
    else:
        weight = np.linalg.lstsq(xc, yc, rcond=None)[0].T
    return weight, y_mean - weight @ x_mean


def _as_float64(a) -> np.ndarray:
    return np.array(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a, dtype=np.float64)


def _layer_output(layer: torch.nn.Linear, inputs: np.ndarray) -> np.ndarray:
    weight = layer.weight.detach().double().cpu().numpy()
    return inputs @ weight.T + layer.bias.detach().double().cpu().numpy()


def refit_linear(layer: torch.nn.Linear, inputs: np.ndarray, targets: np.ndarray, ridge: float = 0.0) -> dict:
    """Replace a linear layer's weight and bias, in place, by the ridge least-squares map from inputs to targets.

    ``inputs`` ``(N, in_features)``, ``targets`` ``(N, out_features)``; ``ridge`` as in :func:`least_squares_layer`.

    Returns
    -------
    dict
        ``n`` (rows), ``ridge``, the layer's mean squared error on the rows ``before`` and ``after``
        (``after <= before`` for ``ridge = 0``) and its weight's Frobenius norm ``norm_before`` and ``norm_after``.
    """
    inputs, targets = _as_float64(inputs), _as_float64(targets)
    before = float(np.mean((_layer_output(layer, inputs) - targets) ** 2))
    norm_before = float(layer.weight.detach().double().norm())
    weight, bias = least_squares_layer(inputs, targets, ridge)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    return {"n": int(len(inputs)), "ridge": float(ridge), "before": before,
            "after": float(np.mean((_layer_output(layer, inputs) - targets) ** 2)),
            "norm_before": norm_before, "norm_after": float(layer.weight.detach().double().norm())}


def refit_head(model: MERModel, x, y, m=None, ridge: float = 0.0,
               device: str | torch.device | None = None) -> dict:
    """Refit every linear layer of the head that has a target, in place (the model is left in eval mode).

    A2M2E's bottleneck first (mid-level targets from the pooled backbone features), then every system's emotion layer
    (emotion targets from what it reads); A2B2E's unsupervised bottleneck stays as trained.

    Parameters
    ----------
    x : array or Tensor (N, 1, T, F)
        The clean training inputs.
    y, m : array or Tensor (N, 8), (N, 7)
        Emotion and mid-level targets (divided by 10); ``m`` is required for A2M2E (else ``MerError``).
    ridge : float
        Relative penalty of :func:`least_squares_layer`.

    Returns
    -------
    dict
        ``{"bottleneck": record or None, "emotion": record}``, records of :func:`refit_linear`.
    """
    if model.spec.midlevel_supervised and m is None:
        raise MerError(f"refit_head: {model.system} needs the mid-level targets m")
    features = backbone_features(model, x, device)
    bottleneck = None
    if model.spec.midlevel_supervised:
        bottleneck = refit_linear(model.bottleneck, features, m, ridge)
    z = features if model.bottleneck is None else _layer_output(model.bottleneck, features)
    emotion = refit_linear(model.emotion, z, y, ridge)
    model.eval()
    return {"bottleneck": bottleneck, "emotion": emotion}
