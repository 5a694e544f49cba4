"""The attack engine: paper-mode equivalence with a one-excerpt-at-a-time loop, bounded mode, logs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mer_lib.attacks import engine
from mer_lib.attacks.engine import (
    AdamUpdate,
    AttackState,
    CorrelationStop,
    FixedSteps,
    Iterate,
    L2Update,
    SignUpdate,
    adam_step,
    adam_tables,
    attack_table,
    bounded_attack,
    correlation_threshold,
    default_step_size,
    l2_step,
    linf_radius,
    paper_attack,
    pearson_rows,
    project_l2,
    project_linf,
    run_attack,
    sign_step,
    spectral_snr_db,
)
from mer_lib.attacks.logs import bottleneck_columns, read_attack_log, tidy_columns, write_attack_log
from mer_lib.config import EMOTIONS, SYSTEMS, AttackConfig
from mer_lib.errors import MerError
from mer_lib.models.nets import Backbone, ModelOutput, build_model

T, F = 40, 32


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------
# A plain implementation of protocol §6.1, one excerpt at a time
# --------------------------------------------------------------------------
def pearson_np(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    am, bm = a - a.mean(), b - b.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.dot(am / np.linalg.norm(am), bm / np.linalg.norm(bm)))
    return max(min(r, 1.0), -1.0) if not math.isnan(r) else r


def plain_paper_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, max_iters: int) -> dict:
    """protocol §6.1 for one excerpt ``(1, 1, T, F)``, with torch.optim.Adam and Python floats.

    ``if not t`` (None or 0.0 means unset) as in the reference implementation.
    """
    model.eval()
    delta = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    best = delta.detach().clone()
    t = None
    converged = False
    p = None
    it = 0
    for it in range(1, max_iters + 1):
        out = model(x + delta)
        p = out.emotions
        r = pearson_np(y.numpy(), p.detach().numpy())
        if not t and not math.isnan(r):
            t = math.ceil(r * 10) / 10
        if t is not None and r <= t:
            best = delta.detach().clone()
            if t >= -0.9:
                t = t - 0.1
            else:
                converged = True
                break
        opt.zero_grad()
        loss = nn.functional.mse_loss(p, y)
        loss.backward()
        delta.grad = -torch.sign(delta.grad)
        opt.step()
    model.zero_grad(set_to_none=True)
    return {"iterations": it, "converged": converged, "t": t, "best": best,
            "norm": float(torch.sqrt((best ** 2).sum())), "new": p.detach().numpy()[0],
            "new_bottleneck": None if out.bottleneck is None else out.bottleneck.detach().numpy()[0]}


class PatternModel(nn.Module):
    """A small conv net whose 8 outputs are exactly ``s * [1, -1, 1, -1, ...]`` for a scalar ``s(x)``.

    With labels ``[a, b, a, b, ...]`` the correlation is exactly +-1 (the sign
    of ``s`` times that of ``a - b``), so the attack can reach the paper
    mode's convergence criterion (r <= about -1): protocol §6.1's stopping rule
    needs a perfectly anti-correlated prediction.
    """

    def __init__(self, s0: float, x: torch.Tensor):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = Backbone(0.0625)
        self.proj = nn.Linear(self.backbone.out_features, 1)
        self.register_buffer("pattern", torch.tensor([1.0, -1.0] * 4))
        self.eval()
        with torch.no_grad():  # a sensitive s(x), shifted so that s(x) = s0 for the given input
            self.proj.weight *= 100.0
            self.proj.bias -= (self.s(x) - s0).view(1)

    def s(self, x):
        return self.proj(self.backbone(x))

    def forward(self, x):
        return ModelOutput(self.s(x) * self.pattern, None)


def assert_matches_plain(model, x, y, lr, max_iters, result):
    for i in range(len(x)):
        ref = plain_paper_attack(model, x[i:i + 1], y[i:i + 1], lr, max_iters)
        assert result.iterations[i] == ref["iterations"], i
        assert result.converged[i] == ref["converged"], i
        assert result.adv_target[i] == ref["t"], i  # exact float equality, e.g. -0.8999999999999998
        np.testing.assert_allclose(result.adv_emotions[i], ref["new"], atol=1e-5)
        np.testing.assert_allclose(result.delta[i], ref["best"][0].numpy(), atol=1e-5)
        assert abs(result.l2[i] - ref["norm"]) <= 1e-5 * max(1.0, ref["norm"])
        if ref["new_bottleneck"] is not None:
            np.testing.assert_allclose(result.adv_bottleneck[i], ref["new_bottleneck"], atol=1e-5)


def test_paper_mode_equals_one_at_a_time_with_early_and_no_convergence():
    torch.manual_seed(1)
    x = torch.randn(1, 1, T, F).repeat(3, 1, 1, 1)
    model = PatternModel(-0.002, x[:1])
    # labels [a, b, ...]: d MSE / ds = 2 s - a + b, so ascent moves s0 = -0.02 up across 0 (r: +1 -> -1,
    # converges) when b - a > 0.04, down away from 0 (r stays +1, never converges) when b - a < 0.04.
    y = torch.tensor([[0.3, 0.5] * 4, [0.300, 0.302] * 4, [0.2, 0.7] * 4])
    max_iters = 60
    result = paper_attack(model, x, y, lr=0.002, max_iters=max_iters)
    assert result.converged.tolist() == [True, False, True]
    assert 20 < result.iterations[0] < max_iters and result.iterations[1] == max_iters
    assert result.adv_target[0] == -0.9999999999999998 and result.adv_target[1] == 0.9
    assert_matches_plain(model, x, y, 0.002, max_iters, result)
    # a converged example is frozen: its perturbation is best = the delta of its last evaluated iterate
    assert result.forward_passes == int(result.iterations.sum())
    assert result.backward_passes == int(result.iterations.sum()) - 1  # none after the last iteration


def zero_threshold_labels(model, x, r_target, seed):
    """Labels whose correlation with the clean prediction is ``r_target``."""
    with torch.no_grad():
        p = model(x).emotions.double()
    rng = np.random.default_rng(seed)
    out = []
    for row in p.numpy():
        pc = row - row.mean()
        pc /= np.linalg.norm(pc)
        z = rng.standard_normal(8)
        z -= z.mean()
        z -= z.dot(pc) * pc
        z /= np.linalg.norm(z)
        out.append(0.4 + 0.1 * (r_target * pc + math.sqrt(1 - r_target ** 2) * z))
    return torch.tensor(np.array(out), dtype=torch.float32)


@pytest.mark.parametrize("system", ["A2E", "A2B2E"])
def test_paper_mode_equals_one_at_a_time_on_an_emotion_model(system):
    torch.manual_seed(3)
    model = build_model(system, 0.0625).eval()
    x = torch.randn(4, 1, T, F)
    # r = 0.15 and 0.05 -> t = 0.2 / 0.1 -> ... -> exactly 0.0, which the reference treats as unset
    y = torch.cat([zero_threshold_labels(model, x[:2], 0.15, 0), zero_threshold_labels(model, x[2:3], 0.05, 1),
                   torch.rand(1, 8)])
    result = paper_attack(model, x, y, lr=0.002, max_iters=25)
    assert not result.converged.any() and (result.iterations == 25).all()
    assert_matches_plain(model, x, y, 0.002, 25, result)
    assert (result.clean_bottleneck is not None) == (system == "A2B2E")
    with torch.no_grad():
        clean = model(x)
    np.testing.assert_allclose(result.clean_emotions, clean.emotions.numpy(), atol=1e-6)


def test_batch_results_do_not_depend_on_the_batch_size():
    torch.manual_seed(4)
    model = build_model("A2M2E", 0.0625).eval()
    x, y = torch.randn(5, 1, T, F), torch.rand(5, 8)
    whole = run_attack(model, x, y, "paper", AttackConfig(max_iters=15, batch_size=5))
    parts = run_attack(model, x, y, "paper", AttackConfig(max_iters=15, batch_size=2))
    np.testing.assert_array_equal(whole.iterations, parts.iterations)
    np.testing.assert_array_equal(whole.adv_target, parts.adv_target)
    np.testing.assert_allclose(whole.adv_emotions, parts.adv_emotions, atol=1e-5)
    np.testing.assert_allclose(whole.adv_bottleneck, parts.adv_bottleneck, atol=1e-5)


def test_model_is_restored_after_an_attack():
    model = build_model("A2E", 0.0625).train()
    flags = [p.requires_grad for p in model.parameters()]
    model.emotion.weight.requires_grad_(False)
    flags[-2] = False
    before = {k: v.clone() for k, v in model.state_dict().items()}
    paper_attack(model, torch.randn(2, 1, T, F), torch.rand(2, 8), max_iters=3)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # eval mode: BatchNorm statistics untouched
        assert torch.equal(v, before[k]), k


def test_pearson_rows_matches_numpy():
    a, b = torch.rand(6, 8), torch.rand(6, 8)
    r = pearson_rows(a, b).numpy()
    np.testing.assert_allclose(r, [pearson_np(a[i], b[i]) for i in range(6)], rtol=0, atol=1e-15)
    assert math.isnan(pearson_rows(a[:1], torch.ones(1, 8)).item())


# --------------------------------------------------------------------------
# The small parts: update rules, projection, stopping rules
# --------------------------------------------------------------------------
def test_adam_step_is_bit_identical_to_torch_adam():
    torch.manual_seed(8)
    x = torch.zeros(3, 1, 5, 4)
    leaf = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([leaf], lr=0.002)
    tables = adam_tables(0.002, 12, x.device)
    delta, m, v = x.clone(), torch.zeros_like(x), torch.zeros_like(x)
    for k in range(1, 13):
        neg_sign = -torch.sign(torch.randn_like(x))
        leaf.grad = neg_sign.clone()
        opt.step()
        delta, m, v = adam_step(delta, neg_sign, m, v, torch.full((3,), k), tables)
        assert torch.equal(delta, leaf.detach()), k


def test_adam_step_uses_each_examples_own_step_count():
    torch.manual_seed(9)
    delta, g, m, v = (torch.randn(2, 1, 3, 2) for _ in range(4))
    v = v.abs()
    tables = adam_tables(0.01, 5, delta.device)
    both = adam_step(delta, g, m, v, torch.tensor([1, 4]), tables)
    for row, k in ((0, 1), (1, 4)):
        one = adam_step(delta[row:row + 1], g[row:row + 1], m[row:row + 1], v[row:row + 1], torch.tensor([k]), tables)
        for a, b in zip(both, one):
            assert torch.equal(a[row:row + 1], b)
    assert torch.equal(AdamUpdate(tables).moments(delta)["v"], torch.zeros_like(delta))


def test_sign_step_moves_every_element_by_the_step_size_up_the_gradient():
    delta = torch.tensor([0.0, 0.5, -0.25])
    grad = torch.tensor([3.0, -0.1, 0.0])
    new = sign_step(delta, -torch.sign(grad), 0.125)
    assert new.tolist() == [0.125, 0.375, -0.25]
    update = SignUpdate(0.125)
    assert update.moments(delta) == {}
    assert torch.equal(update(delta, grad, {}, torch.tensor([1]))[0], new)  # rules take the MSE's gradient


def test_default_step_size_is_used_by_bounded_attack(bounded_setup):
    assert default_step_size(0.1, 10) == 2.5 * 0.1 / 10
    model, x, y = bounded_setup
    res = bounded_attack(model, x[:2], y[:2], 0.05, steps=4)
    assert res.info["step_size"] == default_step_size(0.05, 4)
    assert bounded_attack(model, x[:2], y[:2], 0.05, steps=4, step_size=0.01).info["step_size"] == 0.01


@pytest.mark.parametrize("eps", [0.1, 0.05, 0.25, 1e-3])
def test_projection_keeps_every_element_within_eps(eps):
    radius = linf_radius(eps)
    assert radius <= eps and float(np.float32(radius)) == radius
    assert float(np.nextafter(np.float32(radius), np.float32(1))) > eps  # the largest such float32
    delta = torch.linspace(-3 * eps, 3 * eps, 1001)
    projected = project_linf(delta, eps)
    assert (projected.abs() <= eps).all() and projected.abs().max().item() == radius
    inside = delta.abs() <= radius
    assert torch.equal(projected[inside], delta[inside])


def test_correlation_threshold_follows_the_paper_rule():
    nan = math.nan
    r = torch.tensor([0.35, 0.5, -1.0, 0.05, nan, 0.05], dtype=torch.float64)
    t = torch.tensor([nan, 0.3, -1.0, 0.0, nan, 0.0], dtype=torch.float64)
    new_t, hit, done = correlation_threshold(r, t, zero_threshold_unsets=True)
    assert hit.tolist() == [True, False, True, True, False, True]
    assert done.tolist() == [False, False, True, False, False, False]
    assert new_t[0].item() == 0.4 - 0.1 and new_t[1].item() == 0.3 and new_t[2].item() == -1.0
    assert new_t[3].item() == 0.1 - 0.1  # 0.0 counts as unset: re-initialised from r = 0.05
    assert math.isnan(new_t[4].item())
    kept, hit, _ = correlation_threshold(r[3:4], t[3:4], zero_threshold_unsets=False)
    assert kept.item() == 0.0 and not hit.item()  # 0.05 > 0.0


def make_iterate(delta, pred):
    return Iterate(delta.clone().requires_grad_(True), pred.clone(), pred.clone(), None)


def test_correlation_stop_keeps_the_best_iterate_and_freezes_converged_examples():
    y = torch.arange(8.0).view(1, 8) / 10
    state = AttackState.start(torch.zeros(1, 1, 2, 2), y, {})
    rule = CorrelationStop(zero_threshold_unsets=True)
    deltas = [torch.full((1, 1, 2, 2), v) for v in (0.1, 0.2, 0.3)]
    noisy = y + torch.tensor([[0.3, -0.2, 0.1, 0.0, -0.3, 0.2, 0.0, 0.1]])
    r1 = pearson_rows(y, noisy).item()  # about 0.7: t = ceil(10 r) / 10, hit, then lowered
    for it, (d, p) in enumerate(zip(deltas, (noisy, y, -y)), start=1):
        cur = make_iterate(d, p)
        state.record_iterate(it, cur)
        proceed = rule.judge(state, cur)
        if it == 1:
            assert proceed.tolist() == [True] and state.t.item() == math.ceil(r1 * 10) / 10 - 0.1
        if it == 2:  # r = 1 is above the threshold: best stays the first iterate
            assert torch.equal(state.best, deltas[0]) and torch.equal(state.best_p, noisy)
    assert torch.equal(state.best, deltas[2]) and torch.equal(state.best_p, -y)  # r = -1: a new best
    assert torch.equal(state.last_p, -y) and state.iterations.tolist() == [3]
    state.t = torch.tensor([-1.0], dtype=torch.float64)  # below -0.9 and hit again: converged
    cur = make_iterate(deltas[0], -y)
    assert rule.judge(state, cur).tolist() == [False]
    assert state.converged.tolist() == [True] and state.active.tolist() == [False]
    assert FixedSteps().judge(state, cur) is None


def test_state_put_writes_only_the_active_rows():
    state = AttackState.start(torch.zeros(4, 1, 1, 1), torch.zeros(4, 8), {})
    state.idx = torch.tensor([1, 3])
    values = torch.tensor([10, 30])
    assert state.put(torch.zeros(4, dtype=torch.long), values).tolist() == [0, 10, 0, 30]
    masked = state.put(torch.arange(4), values, torch.tensor([False, True]))
    assert masked.tolist() == [0, 1, 2, 30]
    assert state.take(torch.arange(4) * 2).tolist() == [2, 6]


def test_run_attack_progress_bar_of_batches_prints_nothing_in_line_mode(monkeypatch, capsys):
    monkeypatch.setenv("MER_PROGRESS", "line")
    torch.manual_seed(10)
    model = build_model("A2E", 0.0625).eval()
    res = run_attack(model, torch.randn(3, 1, T, F), torch.rand(3, 8), "paper",
                     AttackConfig(max_iters=2, batch_size=2), progress=True)
    assert len(res) == 3 and capsys.readouterr().out == ""  # a nested bar: no summary line of its own


# --------------------------------------------------------------------------
# Bounded mode
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bounded_setup():
    torch.manual_seed(5)
    model = build_model("A2E", 0.0625).eval()
    x = torch.randn(6, 1, T, F)
    with torch.no_grad():
        y = (model(x).emotions + 0.05 * torch.randn(6, 8)).clamp(0.1, 0.9)  # the model is right, roughly
    return model, x, y


def mae(pred, y) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(y))))


def test_bounded_respects_eps_and_larger_eps_does_more_damage(bounded_setup):
    model, x, y = bounded_setup
    damage = []
    for eps in (0.01, 0.05, 0.2):
        res = bounded_attack(model, x, y, eps, steps=10)
        assert (np.abs(res.delta) <= eps).all() and (res.linf <= eps).all()
        assert (res.iterations == 10).all() and not res.converged.any()
        with torch.no_grad():  # the reported prediction is that of the returned example
            np.testing.assert_allclose(res.adv_emotions, model(x + torch.from_numpy(res.delta)).emotions.numpy(),
                                       atol=1e-6)
        damage.append(mae(res.adv_emotions, y))
    assert mae(res.clean_emotions, y) < damage[0] <= damage[1] <= damage[2]


def test_bounded_attack_beats_random_sign_noise(bounded_setup):
    model, x, y = bounded_setup
    eps = 0.05
    res = bounded_attack(model, x, y, eps, steps=10)
    clean = mae(res.clean_emotions, y)
    g = torch.Generator().manual_seed(0)
    noise = eps * (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).float()
    with torch.no_grad():
        noisy = model(x + noise).emotions.numpy()
    attack_gain = mae(res.adv_emotions, y) - clean
    noise_gain = mae(noisy, y) - clean
    assert attack_gain > 0 and noise_gain < 0.2 * attack_gain


def test_l2_step_moves_by_the_step_size_along_the_gradient():
    delta = torch.zeros(2, 1, 2, 2)
    grad = torch.tensor([[3.0, 0.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 1, 2, 2)
    new = l2_step(delta, grad, 0.5)
    assert torch.allclose(new[0].flatten(), torch.tensor([0.3, 0.0, 0.0, 0.4]))
    assert torch.equal(new[1], delta[1])  # a zero gradient does not move its example
    assert torch.equal(L2Update(0.5)(delta, grad, {}, torch.tensor([1, 1]))[0], new)


def test_l2_projection_shrinks_only_what_is_outside_the_ball():
    delta = torch.stack([torch.full((1, 3, 4), 2.0), torch.full((1, 3, 4), 0.01)])  # norms 6.93 and 0.035
    projected = project_l2(delta, 1.5)
    norms = projected.flatten(1).norm(dim=1)
    assert norms[0].item() == pytest.approx(1.5, rel=1e-6)
    assert torch.allclose(projected[0] / projected[0].flatten()[0], torch.ones_like(projected[0]))  # direction kept
    assert torch.equal(projected[1], delta[1])


def test_l2_bounded_attack_respects_its_radius_and_beats_random_noise_of_the_same_norm(bounded_setup):
    model, x, y = bounded_setup
    damage = []
    for eps in (0.5, 2.0, 8.0):
        res = bounded_attack(model, x, y, eps, steps=10, norm="l2")
        assert res.mode == "bounded-l2" and (res.l2 <= eps * (1 + 1e-5)).all()
        assert (res.l2 >= 0.99 * eps).all()  # 10 steps of 2.5 eps / 10 reach the sphere
        with torch.no_grad():
            np.testing.assert_allclose(res.adv_emotions, model(x + torch.from_numpy(res.delta)).emotions.numpy(),
                                       atol=1e-6)
        damage.append(mae(res.adv_emotions, y))
    clean = mae(res.clean_emotions, y)
    assert clean < damage[0] <= damage[1] <= damage[2]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    noise = 2.0 * noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    with torch.no_grad():
        noisy = mae(model(x + noise).emotions.numpy(), y)
    assert noisy - clean < 0.2 * (damage[1] - clean)
    with pytest.raises(MerError, match="update"):
        bounded_attack(model, x, y, 1.0, update="adam", norm="l2")
    with pytest.raises(MerError, match="norm"):
        bounded_attack(model, x, y, 1.0, norm="l1")


def test_bounded_with_correlation_rule_and_adam_update(bounded_setup):
    model, x, y = bounded_setup
    res = bounded_attack(model, x, y, 0.02, steps=12, update="adam", stop="correlation", lr=0.01)
    assert (res.linf <= 0.02).all()
    with torch.no_grad():  # the returned example is best; its prediction is reported
        np.testing.assert_allclose(res.adv_emotions, model(x + torch.from_numpy(res.delta)).emotions.numpy(),
                                   atol=1e-5)
    assert np.isfinite(res.adv_target).all()
    with pytest.raises(MerError, match="eps"):
        bounded_attack(model, x, y, 0.0)
    with pytest.raises(MerError, match="update"):
        bounded_attack(model, x, y, 0.1, update="pgd")


@pytest.mark.parametrize("system", SYSTEMS)
def test_input_gradients_are_nonzero_for_every_system(system):
    torch.manual_seed(6)
    model = build_model(system, 0.0625).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 1, T, F, requires_grad=True)
    loss = (model(x).emotions - torch.rand(2, 8)).pow(2).mean()
    (grad,) = torch.autograd.grad(loss, x)
    assert (grad.flatten(1).abs().sum(dim=1) > 0).all()
    res = bounded_attack(model, x.detach(), torch.rand(2, 8), 0.05, steps=2)
    assert (res.linf > 0).all()


# --------------------------------------------------------------------------
# SNR, tables, logs
# --------------------------------------------------------------------------
def test_spectral_snr_db():
    mean, std = 0.8, 0.5
    x = torch.rand(2, 1, T, F) * 4 - 1.6  # log10(1 + S) = x * std + mean >= 0: real magnitudes S >= 0
    s = torch.pow(10.0, x.double() * std + mean) - 1
    target = torch.tensor([0.01, 0.1], dtype=torch.float64)  # adv = s * (1 + k) -> SNR = -20 log10(k)
    adv = s * (1 + target.view(-1, 1, 1, 1))
    delta = (torch.log10(1 + adv) - mean) / std - x.double()
    snr = spectral_snr_db(x, delta, mean, std)
    np.testing.assert_allclose(snr, [40.0, 20.0], atol=1e-6)
    assert spectral_snr_db(x, torch.zeros_like(x), mean, std)[0] == np.inf


def test_db_reference_of_a_zero_perturbation_is_mean_db_plus_100():
    pytest.importorskip("librosa")
    import librosa

    x = torch.randn(1, 1, 20, 12)
    value = engine.db_reference(x, torch.zeros_like(x))[0]
    ax = librosa.feature.inverse.mel_to_stft(x[0, 0].numpy(), sr=22050)
    assert value == pytest.approx(float(np.mean(librosa.amplitude_to_db(ax))) + 100.0, abs=1e-4)


def test_attack_table_and_log_round_trip(tmp_path):
    torch.manual_seed(7)
    model = build_model("A2M2E", 0.0625).eval()
    x = torch.randn(3, 1, T, F)
    y = np.round(np.array([[0.42, 0.62, 0.64, 0.48333, 0.51667, 0.1, 0.1, 0.1]] * 3) + np.arange(3)[:, None] * 0.01, 5)
    res = paper_attack(model, x, torch.tensor(y, dtype=torch.float32), max_iters=5, mean=0.5, std=0.3)
    tidy = attack_table(res, [146, 7, 310], y)
    assert tidy.columns[:6].tolist() == ["number", "iterations", "db_reference", "norm", "converged", "adv_target"]
    for cols in (tidy_columns("true"), tidy_columns("orig"), tidy_columns("new"), bottleneck_columns("orig"),
                 bottleneck_columns("new"), ["l2", "linf", "snr_db"]):
        assert set(cols) <= set(tidy.columns)
    assert tidy["snr_db"].notna().all() and (tidy["mode"] == "paper").all()  # inf where best stayed 0

    path = write_attack_log(tidy, tmp_path / "log.csv")
    back = read_attack_log(path)
    exact = ["number", "iterations", "norm", "converged", "adv_target"] + tidy_columns("true")
    pd.testing.assert_frame_equal(back[exact], tidy[exact], check_exact=True, check_dtype=False)
    assert back["db_reference"].isna().all()
    for prefix in ("orig", "new"):  # float32 predictions, printed by numpy with at most 8 decimals
        b, t = back[tidy_columns(prefix)].to_numpy(), tidy[tidy_columns(prefix)].to_numpy()
        assert ((b.astype(np.float32) == t.astype(np.float32)) | (np.abs(b - t) <= 5e-9)).all()
    again = write_attack_log(back, tmp_path / "again.csv")
    assert again.read_bytes() == path.read_bytes()  # the reader returns exactly what the log holds


def test_config_validation():
    with pytest.raises(MerError, match="max_iters"):
        AttackConfig(max_iters=0)
    with pytest.raises(MerError, match="bounded_stop"):
        AttackConfig(bounded_stop="never")
    with pytest.raises(MerError, match="shape"):
        paper_attack(build_model("A2E", 0.0625), torch.randn(2, T, F), torch.rand(2, 8))
    assert AttackConfig().lr == 0.002 and AttackConfig().max_iters == 1000
    assert AttackConfig().adv_train_iters == 50 and AttackConfig().adv_every == 5
    assert len(EMOTIONS) == 8


def test_a_registered_attack_is_run_hashed_tagged_and_costed(bounded_setup, monkeypatch):
    """A new spectrogram attack is one registry entry: the engine runs it, the stage hashes and tags it,
    the cost model counts it."""
    from mer_lib.attacks import protocol_cost, stage

    model, x, y = bounded_setup

    def first_step(model, x, y, config, eps, **common):  # the paper walk cut to one evaluation
        return paper_attack(model, x, y, config.lr, 1, **common)

    kind = engine.AttackKind("first-step", None, lambda config, eps: {"mode": "first-step", "lr": config.lr},
                             first_step, lambda config, n: {"forward": n, "backward_input": 0})
    monkeypatch.setitem(engine.ATTACKS, kind.name, kind)
    config = AttackConfig(lr=0.05, batch_size=4)
    result = engine.run_attack(model, x, y, "first-step", config)
    assert len(result) == len(x) and (result.iterations == 1).all() and not result.delta.any()
    assert result.mode == "first-step"
    setting = stage.AttackSetting.of("first-step", 0.3)  # an unbounded attack has no radius
    assert setting == ("first-step", None) and setting.tag == "first-step"
    assert setting.settings(config) == {"mode": "first-step", "lr": 0.05}
    assert stage.AttackSetting.of("bounded-l2", 6).tag == "bounded-l2-eps6"
    with pytest.raises(MerError, match="eps must be a positive number, got None"):
        stage.AttackSetting.of("bounded")
    jobs = protocol_cost.protocol_jobs("smoke")
    first = jobs[jobs["setting"] == "first-step"]
    assert len(first) == len(set(jobs["system"])) * len(set(jobs["seed"])) and (first["backward_input"] == 0).all()
    with pytest.raises(MerError, match=r"one of \['paper', 'bounded', 'bounded-l2', 'first-step'\], got 'last-step'"):
        engine.run_attack(model, x, y, "last-step", config)
