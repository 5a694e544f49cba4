"""The gain of a model: gradient norms of its emotions with respect to the input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mer_lib.errors import MerError
from mer_lib.models.gain import input_gradient_norms
from mer_lib.models.nets import ModelOutput, build_model


class _Linear(nn.Module):
    """emotions = flatten(x) @ W + b: its Jacobian is W for every excerpt."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return ModelOutput(x.flatten(1) @ self.w, None)


def test_linear_model_gives_its_weights_norms():
    w = torch.randn(3 * 4, 8, generator=torch.Generator().manual_seed(0))
    x = np.random.default_rng(1).standard_normal((5, 1, 3, 4)).astype(np.float32)
    norms = input_gradient_norms(_Linear(w).eval(), x, batch_size=2)
    assert norms.shape == (5, 2)
    np.testing.assert_allclose(norms[:, 0], float(torch.linalg.norm(w)), rtol=1e-6)
    np.testing.assert_allclose(norms[:, 1], float(w.abs().sum(0).mean()), rtol=1e-6)


def test_gain_scales_with_the_head_and_is_batch_consistent():
    torch.manual_seed(0)
    model = build_model("A2E", 0.0625).eval()
    x = np.random.default_rng(2).standard_normal((3, 1, 313, 149)).astype(np.float32)
    base = input_gradient_norms(model, x, batch_size=3)
    assert (base > 0).all()
    one_by_one = np.concatenate([input_gradient_norms(model, x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(one_by_one, base, rtol=1e-4)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(10.0)
    np.testing.assert_allclose(input_gradient_norms(model, x), 10.0 * base, rtol=1e-4)


def test_bad_arguments():
    model = _Linear(torch.ones(12, 8))
    with pytest.raises(MerError, match="eval mode"):
        input_gradient_norms(model.train(), np.zeros((1, 1, 3, 4), np.float32))
    with pytest.raises(MerError, match="shape"):
        input_gradient_norms(model.eval(), np.zeros((3, 4), np.float32))
