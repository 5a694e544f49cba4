"""Least-squares refit of a trained model's emotion layer: the scaled-down profiles' convergence step.

Why
---
Every system ends in a linear emotion layer. In the paper's budget (up to 199
epochs of Adam at lr 5e-4) that layer converges. In the quick profile's 10
epochs it does not, and the bottleneck systems suffer most: A2M2E's units are
trained towards the mid-level ratings divided by 10 and, after 10 epochs,
still vary little (SD 0.005-0.14), so its emotion layer needs weights of
several units, while Adam moves each weight by at most about ``lr`` per step
(360 steps x 0.004). Measured on the committed quick run (5 seeds, test
split): solving that one layer by least squares on the training excerpts,
backbone and bottleneck frozen, takes A2M2E's mean emotion r from
0.52 +- 0.11 to 0.71 +- 0.02, A2B2E's from 0.60 to 0.72 and A2E's from 0.70
to 0.75; the representation was learned, the last layer had not caught up.

What
----
With ``TrainConfig.refit_head`` (quick and smoke profiles; off in ``paper``),
:func:`mer_lib.models.stage.train_system` calls :func:`refit_emotion_layer`
after training, once the best epoch's weights are restored: the emotion
layer's weight and bias become the ridge-regression solution (float64) of the
emotion targets on what the layer reads
(:meth:`~mer_lib.models.nets.MERModel.head_input`, eval mode) over the clean
training excerpts. Nothing else changes: the backbone, the bottleneck (and so
what A2M2E's units mean) and the adversarially trained backbones of aA2E and
aA2B2E stay as trained. The refit is deterministic.

Why a ridge and not plain least squares: A2E's 32 pooled features are nearly
collinear, and plain least squares fits them with weights of norm 120-350
(the trained layer: about 4). Predictions on clean inputs barely change, but
such a layer amplifies every perturbation: in a full quick run with plain
least squares, A2E's median dMAE under the paper-mode attack rose from 0.48
to 10.4. The validation error is flat over the penalty (it cannot choose it),
so the penalty is fixed: ``TrainConfig.refit_ridge`` times the number of
excerpts times the mean variance of the layer's inputs (0.01 in the quick
profile: weight norms 5-8, like a trained layer, for 0.00-0.04 less test r
than plain least squares).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from mer_lib.errors import MerError
from mer_lib.models.nets import MERModel
from mer_lib.models.train import EVAL_BATCH, resolve_device, to_input


@torch.no_grad()
def head_inputs(model: MERModel, x, device: str | torch.device | None = None, batch_size: int = EVAL_BATCH,
                channels_last: bool = True) -> np.ndarray:
    """What the emotion layer reads, in eval mode.

    The parameters are those of :func:`mer_lib.models.train.predict`.

    Returns
    -------
    ndarray (N, 7) or (N, D)
        Bottleneck activations (bottleneck systems) or pooled backbone
        features (A2E, aA2E), float64.
    """
    device = next(model.parameters()).device if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    out = [model.head_input(to_input(x[i:i + batch_size], device, channels_last)).double().cpu().numpy()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return np.concatenate(out)


def least_squares_layer(inputs: np.ndarray, targets: np.ndarray,
                        ridge: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of the linear layer that best maps ``inputs`` to ``targets`` in squared error.

    Parameters
    ----------
    inputs : ndarray (N, k)
    targets : ndarray (N, m)
    ridge : float
        Relative L2 penalty ``r >= 0`` on the weight (not the bias): the
        solution minimises ``|Y - X W^T - b|^2 + r * N * mean(var(X)) * |W|^2``,
        so ``r`` does not depend on the inputs' scale. 0 gives plain least
        squares (minimum-norm where the inputs are rank-deficient).

    Returns
    -------
    weight : ndarray (m, k)
        Solved on the centred data (so constant input columns, e.g. dead ReLU
        features, get weight 0).
    bias : ndarray (m,)
        ``mean(targets) - weight @ mean(inputs)``.

    Raises
    ------
    MerError
        If the shapes disagree, there are fewer than 2 rows, a value is not
        finite or ``ridge`` is negative.
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


def _mse(model: MERModel, z: np.ndarray, y: np.ndarray) -> float:
    w = model.emotion.weight.detach().double().cpu().numpy()
    b = model.emotion.bias.detach().double().cpu().numpy()
    return float(np.mean((z @ w.T + b - y) ** 2))


def refit_emotion_layer(model: MERModel, x, y, ridge: float = 0.0, device: str | torch.device | None = None,
                        channels_last: bool = True) -> dict:
    """Replace the emotion layer's weight and bias by their (ridge) least-squares solution on ``(x, y)``, in place.

    Parameters
    ----------
    model : MERModel
        A trained model (left in eval mode).
    x : array or Tensor (N, 1, T, F)
        The clean training inputs.
    y : array or Tensor (N, 8)
        Their emotion targets (divided by 10).
    ridge : float
        Relative penalty of :func:`least_squares_layer`.
    device : str or torch.device, optional
        Where to compute (default: the model's device).
    channels_last : bool
        Input memory layout (as in training).

    Returns
    -------
    dict
        ``n`` (excerpts used), ``ridge``, the training emotion MSE of the
        layer ``before`` and ``after`` (float64, from the layer's inputs;
        ``after <= before`` for ``ridge = 0``) and the Frobenius norm of the
        weight ``norm_before`` and ``norm_after``.
    """
    z = head_inputs(model, x, device, channels_last=channels_last)
    y = np.array(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    before, norm_before = _mse(model, z, y), float(model.emotion.weight.detach().double().norm())
    weight, bias = least_squares_layer(z, y, ridge)
    layer = model.emotion
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    model.eval()
    return {"n": int(len(z)), "ridge": float(ridge), "before": before, "after": _mse(model, z, y),
            "norm_before": norm_before, "norm_after": float(layer.weight.detach().double().norm())}
