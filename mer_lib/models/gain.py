"""A model's gain: how far its predictions move per unit change of its input.

A fixed-length walk of signed steps such as the paper-mode attack travels an output distance (dMAE) that grows with
the gain, so the gain is reported beside every robustness number (protocol §7, "what dMAE measures").
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mer_lib.errors import MerError
from mer_lib.models.nets import memory_format_name
from mer_lib.models.stage import load_model_dir
from mer_lib.models.train import resolve_device

__all__ = ["input_gradient_norms", "model_gains"]


def input_gradient_norms(model: nn.Module, x, batch_size: int = 12) -> np.ndarray:
    """Per excerpt: the norms of the emotions' gradients with respect to the (standardised) input.

    Parameters
    ----------
    model : MERModel
        In eval mode (batch statistics would mix the excerpts).
    x : array or Tensor (N, 1, T, F)
        Standardised inputs.

    Returns
    -------
    numpy.ndarray (N, 2)
        Column 0: the Frobenius norm of the Jacobian of the 8 emotions (``sqrt(sum_k ||grad_x f_k||_2^2)``); column 1:
        the mean over the emotions of each gradient's L1 norm (the first-order change of an output under a signed step
        of size 1 in every bin).
    """
    if model.training:
        raise MerError("input_gradient_norms: put the model in eval mode (batch statistics would mix excerpts)")
    if batch_size < 1:
        raise MerError(f"input_gradient_norms: batch_size must be positive, got {batch_size}")
    param = next(model.parameters())
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=param.dtype)
    if xt.ndim != 4:
        raise MerError(f"input_gradient_norms: expected inputs (N, 1, T, F), got shape {tuple(xt.shape)}")
    layout = torch.channels_last if memory_format_name(model) == "channels_last" else torch.contiguous_format
    out = []
    for start in range(0, xt.shape[0], batch_size):
        batch = xt[start:start + batch_size].to(param.device).contiguous(memory_format=layout).requires_grad_(True)
        emotions = model(batch).emotions
        sq = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
        l1 = torch.zeros_like(sq)
        for k in range(emotions.shape[1]):
            (grad,) = torch.autograd.grad(emotions[:, k].sum(), batch, retain_graph=k + 1 < emotions.shape[1])
            flat = grad.reshape(grad.shape[0], -1).double()
            sq += flat.square().sum(dim=1)
            l1 += flat.abs().sum(dim=1)
        out.append(torch.stack([sq.sqrt(), l1 / emotions.shape[1]], dim=1).cpu().numpy())
    return np.concatenate(out, axis=0)


def model_gains(model_dirs: Mapping[tuple[str, int], str | os.PathLike], x,
                device: str | torch.device | None = None) -> pd.DataFrame:
    """The mean gradient norms of every model over the same inputs (e.g. the clean test excerpts).

    Returns one row per model: ``system``, ``seed``, ``grad_l2`` and ``grad_l1`` (means of
    :func:`input_gradient_norms`), computed on ``device`` (``None``: CUDA if available, else CPU).
    """
    device = resolve_device(device)
    rows = []
    for (system, seed), folder in model_dirs.items():
        model, _ = load_model_dir(Path(folder), device)
        norms = input_gradient_norms(model, x)
        rows.append({"system": system, "seed": int(seed), "grad_l2": float(norms[:, 0].mean()),
                     "grad_l1": float(norms[:, 1].mean())})
    return pd.DataFrame(rows, columns=["system", "seed", "grad_l2", "grad_l1"])
