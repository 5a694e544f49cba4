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
layer's weight and bias become the ordinary-least-squares solution (float64,
minimum-norm if the inputs are rank-deficient) of the emotion targets on what
the layer reads (:meth:`~mer_lib.models.nets.MERModel.head_input`, eval mode)
over the clean training excerpts. Nothing else changes: the backbone, the
bottleneck (and so what A2M2E's units mean) and the adversarially trained
backbones of aA2E and aA2B2E stay as trained. The refit is deterministic.
"""
from __future__ import annotations

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


def least_squares_layer(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of the linear layer that best maps ``inputs`` to ``targets`` in squared error.

    Parameters
    ----------
    inputs : ndarray (N, k)
    targets : ndarray (N, m)

    Returns
    -------
    weight : ndarray (m, k)
        The minimum-norm least-squares solution on the centred data (so
        constant input columns, e.g. dead ReLU features, get weight 0).
    bias : ndarray (m,)
        ``mean(targets) - weight @ mean(inputs)``.

    Raises
    ------
    MerError
        If the shapes disagree, there are fewer than 2 rows or a value is not finite.
    """
    x, y = np.asarray(inputs, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise MerError(f"least squares needs inputs (N, k) and targets (N, m) with the same N >= 2, "
                       f"got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise MerError("least squares: inputs and targets must be finite")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    weight = np.linalg.lstsq(x - x_mean, y - y_mean, rcond=None)[0].T
    return weight, y_mean - weight @ x_mean


def _mse(model: MERModel, z: np.ndarray, y: np.ndarray) -> float:
    w = model.emotion.weight.detach().double().cpu().numpy()
    b = model.emotion.bias.detach().double().cpu().numpy()
    return float(np.mean((z @ w.T + b - y) ** 2))


def refit_emotion_layer(model: MERModel, x, y, device: str | torch.device | None = None,
                        channels_last: bool = True) -> dict:
    """Replace the emotion layer's weight and bias by their least-squares solution on ``(x, y)``, in place.

    Parameters
    ----------
    model : MERModel
        A trained model (left in eval mode).
    x : array or Tensor (N, 1, T, F)
        The clean training inputs.
    y : array or Tensor (N, 8)
        Their emotion targets (divided by 10).
    device : str or torch.device, optional
        Where to compute (default: the model's device).
    channels_last : bool
        Input memory layout (as in training).

    Returns
    -------
    dict
        ``n`` (excerpts used) and the training emotion MSE of the layer
        ``before`` and ``after`` (computed in float64 from the layer's
        inputs; ``after <= before`` up to rounding).
    """
    z = head_inputs(model, x, device, channels_last=channels_last)
    y = np.array(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    before = _mse(model, z, y)
    weight, bias = least_squares_layer(z, y)
    layer = model.emotion
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
    model.eval()
    return {"n": int(len(z)), "before": before, "after": _mse(model, z, y)}
