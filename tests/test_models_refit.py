"""The least-squares refit of the emotion layer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_lib.errors import MerError
from mer_lib.models.nets import build_model
from mer_lib.models.refit import backbone_features, head_inputs, least_squares_layer, refit_head
from mer_lib.models.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 24, 20, generator=g)
    y = torch.rand(n, 8, generator=g) * 0.8 + 0.1
    return x, y


def _midlevel(n=24, seed=1):
    return torch.rand(n, 7, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.1


def test_least_squares_recovers_an_exact_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5))
    w, b = rng.normal(size=(3, 5)), rng.normal(size=3)
    weight, bias = least_squares_layer(x, x @ w.T + b)
    np.testing.assert_allclose(weight, w, atol=1e-10)
    np.testing.assert_allclose(bias, b, atol=1e-10)


def test_least_squares_gives_constant_inputs_no_weight():
    rng = np.random.default_rng(2)
    x = np.c_[rng.normal(size=(30, 2)), np.zeros(30), np.full(30, 3.0)]  # a dead and a constant feature
    y = x[:, :1] * 2.0 - x[:, 1:2] + 0.5
    weight, bias = least_squares_layer(x, y)
    np.testing.assert_allclose(weight, [[2.0, -1.0, 0.0, 0.0]], atol=1e-10)
    np.testing.assert_allclose(bias, [0.5], atol=1e-10)


@pytest.mark.parametrize("inputs, targets", [
    (np.zeros((5, 2)), np.zeros((4, 1))),  # rows differ
    (np.zeros(5), np.zeros((5, 1))),  # not 2-D
    (np.zeros((1, 2)), np.zeros((1, 1))),  # one row
    (np.array([[0.0], [np.nan]]), np.zeros((2, 1))),  # not finite
])
def test_least_squares_refuses_bad_input(inputs, targets):
    with pytest.raises(MerError, match="least squares"):
        least_squares_layer(inputs, targets)


@pytest.mark.parametrize("system, width", [("A2E", 0.0625), ("A2M2E", 0.0625)])
def test_head_inputs_are_what_the_emotion_layer_reads(system, width):
    torch.manual_seed(0)
    model = build_model(system, width)
    x, _ = _data()
    z = head_inputs(model, x)
    emotions, bottleneck = predict(model, x)
    assert z.dtype == np.float64 and z.shape == (24, 7 if system == "A2M2E" else model.backbone.out_features)
    w, b = (p.detach().double().numpy() for p in (model.emotion.weight, model.emotion.bias))
    np.testing.assert_allclose(z @ w.T + b, emotions, atol=1e-5)
    if bottleneck is not None:
        np.testing.assert_allclose(z, bottleneck, atol=1e-6)
    assert model.training  # head_inputs restores the mode it found


@pytest.mark.parametrize("system, layers", [
    ("A2E", {"emotion"}), ("aA2B2E", {"emotion"}), ("A2M2E", {"bottleneck", "emotion"}),
])
def test_refit_changes_only_the_head_layers_with_a_target(system, layers):
    torch.manual_seed(0)
    model = build_model(system, 0.0625)
    x, y = _data()
    m = _midlevel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = refit_head(model, x, y, m)
    assert (record["bottleneck"] is None) == (system != "A2M2E")
    for name in layers:
        assert record[name]["n"] == 24 and record[name]["after"] <= record[name]["before"] + 1e-12
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{layer}.{p}" for layer in layers for p in ("weight", "bias")}
    assert not model.training
    # each new layer is the least-squares one: its residuals are orthogonal to its (centred) inputs
    emotions, units = predict(model, x)
    fits = [(head_inputs(model, x), emotions, y)]
    if system == "A2M2E":
        fits.append((backbone_features(model, x), units, m))
    for inputs, outputs, targets in fits:
        residual = outputs.astype(np.float64) - targets.double().numpy()
        np.testing.assert_allclose((inputs - inputs.mean(0)).T @ residual, 0.0, atol=1e-4)
        np.testing.assert_allclose(residual.mean(0), 0.0, atol=1e-5)


def test_refit_of_a2m2e_needs_the_midlevel_targets():
    x, y = _data()
    with pytest.raises(MerError, match="A2M2E needs the mid-level targets"):
        refit_head(build_model("A2M2E", 0.0625), x, y)


def test_refit_is_deterministic():
    x, y = _data()
    layers = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model("A2M2E", 0.0625)
        refit_head(model, x, y, _midlevel(), ridge=0.01)
        layers.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(*layers)


def test_ridge_matches_its_closed_form_and_shrinks_the_weight():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(40, 2))
    x = np.c_[base, base @ [[1.0], [1.0]] + 1e-3 * rng.normal(size=(40, 1))]  # a nearly collinear third input
    y = x[:, :1] - x[:, 1:2] + 0.1 * rng.normal(size=(40, 1))
    plain, _ = least_squares_layer(x, y)
    weight, bias = least_squares_layer(x, y, ridge=0.01)
    xc = x - x.mean(0)
    expected = np.linalg.solve(xc.T @ xc + 0.01 * 40 * xc.var(0).mean() * np.eye(3), xc.T @ (y - y.mean(0))).T
    np.testing.assert_allclose(weight, expected, rtol=1e-10)
    np.testing.assert_allclose(bias, y.mean(0) - weight @ x.mean(0), rtol=1e-10)
    assert np.linalg.norm(weight) < np.linalg.norm(plain)
    # the penalty is relative to the inputs' variance: rescaling the inputs rescales the weight inversely
    scaled, _ = least_squares_layer(10.0 * x, y, ridge=0.01)
    np.testing.assert_allclose(scaled, weight / 10.0, rtol=1e-8)


@pytest.mark.parametrize("ridge", [-0.1, float("nan"), "0.1", None])
def test_ridge_must_be_a_non_negative_number(ridge):
    with pytest.raises(MerError, match="ridge must be a number >= 0"):
        least_squares_layer(np.ones((3, 2)), np.ones((3, 1)), ridge=ridge)


def test_refit_records_the_ridge_and_the_weight_norms():
    torch.manual_seed(0)
    model = build_model("A2M2E", 0.0625)
    x, y = _data()
    norm = float(model.emotion.weight.detach().double().norm())
    record = refit_head(model, x, y, _midlevel(), ridge=0.05)["emotion"]
    assert record["ridge"] == 0.05 and record["norm_before"] == pytest.approx(norm)
    assert record["norm_after"] == pytest.approx(float(model.emotion.weight.detach().double().norm()))
