"""The training loop (mer_lib.models.train): losses, early stopping, determinism, resuming."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import assert_same_weights, make_data, weights
from torch.nn import functional as F

from mer_lib.config import TrainConfig
from mer_lib.errors import MerError
from mer_lib.models import train
from mer_lib.models.nets import build_model, system_spec
from mer_lib.models.train import Cost, system_loss, train_model, train_step, validation_count, validation_score

CFG = TrainConfig(width=0.0625, max_epochs=3, patience=5, lr=1e-3, batch_size=4, seeds=(1,),
                  val_drop_last=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    x, y, m = make_data(26)
    return (x[:16], y[:16], m[:16]), (x[16:], y[16:], m[16:])


# --------------------------------------------------------------------------
# Losses and a single step
# --------------------------------------------------------------------------
def test_one_step_changes_weights_and_lowers_loss(data):
    (x, y, m), _ = data
    torch.manual_seed(0)
    model = build_model("A2M2E", 0.0625)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xb, yb, mb = torch.from_numpy(x[:8]), torch.from_numpy(y[:8]), torch.from_numpy(m[:8])
    spec = system_spec("A2M2E")

    def loss_now():  # same dropout masks before and after the step
        torch.manual_seed(123)
        model.train()
        with torch.no_grad():
            return system_loss(spec, model(xb), yb, mb)[0].item()

    before_w, before = weights(model), loss_now()
    step_loss = train_step(model, opt, spec, xb, yb, mb)[0]
    after = loss_now()
    changed = [k for k in before_w if "weight" in k and not torch.equal(before_w[k], model.state_dict()[k])]
    assert len(changed) == len([k for k in before_w if "weight" in k])
    assert after < before and torch.isfinite(step_loss)


def _grads(system, xb, yb, mb):
    torch.manual_seed(0)
    model = build_model(system, 0.0625).train()
    torch.manual_seed(1)
    loss, emo, ml = system_loss(system_spec(system), model(xb), yb, mb)
    loss.backward()
    return loss, emo, ml, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_a2b2e_gradient_does_not_depend_on_midlevel_targets(data):
    (x, y, m), _ = data
    xb, yb = torch.from_numpy(x[:4]), torch.from_numpy(y[:4])
    l1, e1, ml1, g1 = _grads("A2B2E", xb, yb, torch.from_numpy(m[:4]))
    l2, e2, ml2, g2 = _grads("A2B2E", xb, yb, torch.zeros(4, 7))
    l3, _, ml3, g3 = _grads("A2B2E", xb, yb, None)
    assert l1.item() == l2.item() == l3.item() == e1.item()
    assert ml1.item() != ml2.item() and ml3 is None  # monitored, not optimised
    assert_same_weights(g1, g2)
    assert_same_weights(g1, g3)


def test_a2e_loss_is_emotion_mse(data):
    (x, y, m), _ = data
    torch.manual_seed(0)
    model = build_model("A2E", 0.0625).eval()
    out = model(torch.from_numpy(x[:4]))
    loss, emo, ml = system_loss(system_spec("A2E"), out, torch.from_numpy(y[:4]), torch.from_numpy(m[:4]))
    assert ml is None
    assert loss.item() == pytest.approx(float(np.mean((out.emotions.detach().numpy() - y[:4]) ** 2)), rel=1e-6)


def test_a2m2e_loss_is_half_emotion_half_midlevel(data):
    (x, y, m), _ = data
    xb, yb, mb = torch.from_numpy(x[:4]), torch.from_numpy(y[:4]), torch.from_numpy(m[:4])
    torch.manual_seed(0)
    model = build_model("A2M2E", 0.0625).eval()
    out = model(xb)
    loss, emo, ml = system_loss(system_spec("A2M2E"), out, yb, mb)
    e = np.mean((out.emotions.detach().numpy() - y[:4]) ** 2)
    b = np.mean((out.bottleneck.detach().numpy() - m[:4]) ** 2)
    assert loss.item() == pytest.approx(0.5 * e + 0.5 * b, rel=1e-6)
    assert emo.item() == pytest.approx(e, rel=1e-6) and ml.item() == pytest.approx(b, rel=1e-6)
    # gradient = 0.5 * grad(emotion MSE) + 0.5 * grad(mid-level MSE)
    _, _, _, g = _grads("A2M2E", xb, yb, mb)
    parts = []
    for which in ("emotions", "bottleneck"):
        torch.manual_seed(0)
        model = build_model("A2M2E", 0.0625).train()
        torch.manual_seed(1)
        out = model(xb)
        (F.mse_loss(out.emotions, yb) if which == "emotions" else F.mse_loss(out.bottleneck, mb)).backward()
        parts.append({n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                      for n, p in model.named_parameters()})
    flat = torch.cat([g[n].flatten() for n in g])
    combined = torch.cat([(0.5 * parts[0][n] + 0.5 * parts[1][n]).flatten() for n in g])
    torch.testing.assert_close(flat, combined, rtol=1e-4, atol=1e-5 * flat.abs().max().item())
    with pytest.raises(MerError, match="mid-level"):
        system_loss(system_spec("A2M2E"), out, yb, None)
    # the adversarial update's loss: the emotion MSE alone, mid-level targets or not (protocol §5)
    loss, emo, ml = system_loss(system_spec("A2M2E"), out, yb, mb, emotion_only=True)
    assert loss is emo and ml is None and torch.equal(emo, F.mse_loss(out.emotions, yb))


def test_validation_score_parts():
    rng = np.random.default_rng(0)
    y, p = rng.random((12, 8)), rng.random((12, 8))
    m, b = rng.random((12, 7)), rng.random((12, 7))
    plain = validation_score(y, p)
    both = validation_score(y, p, m, b)
    r_emo = np.mean([np.corrcoef(y[:, k], p[:, k])[0, 1] for k in range(8)])
    r_ml = np.mean([np.corrcoef(m[:, k], b[:, k])[0, 1] for k in range(7)])
    assert plain["score"] == pytest.approx(r_emo) and math.isnan(plain["midlevel_r"])
    assert both["score"] == pytest.approx(r_emo + r_ml) and both["midlevel_r"] == pytest.approx(r_ml)
    assert both["r_tension"] == pytest.approx(np.corrcoef(y[:, 2], p[:, 2])[0, 1])
    assert validation_count(36, 8, True) == 32 and validation_count(36, 8, False) == 36
    emotions_only = validation_score(y, p, m, b, add_bottleneck=False)
    assert emotions_only["score"] == pytest.approx(r_emo) and emotions_only["midlevel_r"] == pytest.approx(r_ml)


@pytest.mark.parametrize("quirk", [True, False])
def test_a2b2e_validation_quirk(data, quirk):
    """The reference adds A2B2E's unsupervised bottleneck r to its score; the flag turns it off."""
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=1, score_unsupervised_bottleneck=quirk)
    h = train_model("A2B2E", x, y, m, xv, yv, mv, cfg, seed=1, progress=False).history
    expected = h["valid_emotion_r"] + (h["valid_midlevel_r"] if quirk else 0.0)
    np.testing.assert_allclose(h["valid_score"], expected)
    h = train_model("A2M2E", x, y, m, xv, yv, mv, cfg, seed=1, progress=False).history  # always added
    np.testing.assert_allclose(h["valid_score"], h["valid_emotion_r"] + h["valid_midlevel_r"])


# --------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------
def scripted(monkeypatch, scores):
    """Replace the validation by a stub returning the given scores, one per epoch."""
    it = iter(scores)
    monkeypatch.setattr(train, "validate", lambda model, setup, cost: {"score": next(it)})


def test_early_stopping_rule():
    loop = train.LoopState()
    nan = float("nan")
    improved = [train.early_stopping(loop, epoch, score, patience=2)
                for epoch, score in enumerate([nan, 0.1, 0.1, 0.05, nan], start=1)]
    # the first epoch always improves (an undefined score counts as -inf), ties improve
    assert improved == [True, True, True, False, False]
    assert loop.best_epoch == 3 and loop.best_score == 0.1 and loop.patience_counter == 2 and loop.stop


def test_early_stopping_stops_after_patience_and_restores_best(data, monkeypatch):
    (x, y, m), (xv, yv, mv) = data
    seen = {}
    hook = lambda e: seen.__setitem__(e.epoch, weights(e.model))
    cfg = dataclasses.replace(CFG, max_epochs=20, patience=3)
    # epoch 5 ties the best (ties count as improvement, as in the reference); 6-8 do not improve
    scripted(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.3, 0.1, 0.29, 0.0, 0.9])
    result = train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False, hooks=[hook])
    assert result.epochs_run == 8 and result.stopped_early and result.best_epoch == 5
    assert result.best_score == 0.3
    assert list(result.history["improved"]) == [True, True, False, False, True, False, False, False]
    assert list(result.history["patience_counter"]) == [0, 0, 1, 2, 0, 1, 2, 3]
    assert_same_weights(weights(result.model), seen[5])
    assert not torch.equal(seen[5]["emotion.weight"], seen[8]["emotion.weight"])
    assert not result.model.training


def test_undefined_scores_do_not_improve(data, monkeypatch):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=6, patience=2)
    scripted(monkeypatch, [float("nan"), 0.2, float("nan"), float("nan"), 1.0])
    result = train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False)
    assert result.best_epoch == 2 and result.epochs_run == 4


def test_budget_without_early_stop_and_cost_counters(data):
    (x, y, m), (xv, yv, mv) = data
    result = train_model("A2M2E", x, y, m, xv, yv, mv, dataclasses.replace(CFG, max_epochs=2), seed=3,
                         progress=False)
    assert result.epochs_run == 2 and not result.stopped_early
    c = result.cost
    assert c.optimizer_steps == 2 * 4 and c.examples_seen == 2 * 16 == c.train_forward == c.train_backward
    assert c.eval_forward == 2 * 10 and c.adversarial_steps == 0
    h = result.history
    assert {"train_loss", "train_emotion_mse", "train_midlevel_mse", "valid_score", "valid_emotion_r",
            "valid_midlevel_r", "valid_r_valence", "seconds"} <= set(h.columns)
    assert np.allclose(h["valid_score"], h["valid_emotion_r"] + h["valid_midlevel_r"])
    assert np.allclose(h["train_loss"], 0.5 * h["train_emotion_mse"] + 0.5 * h["train_midlevel_mse"], rtol=1e-6)


def test_validation_quirk_drops_the_last_partial_batch(data, monkeypatch):
    (x, y, m), (xv, yv, mv) = data
    scored = []
    real = train.predict

    def spy(model, xs, *args, **kwargs):
        scored.append(len(xs))
        return real(model, xs, *args, **kwargs)

    cfg = dataclasses.replace(CFG, max_epochs=1, val_drop_last=True)
    monkeypatch.setattr(train, "predict", spy)
    train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False)
    train_model("A2E", x, y, None, xv, yv, None, dataclasses.replace(cfg, val_drop_last=False), seed=1,
                progress=False)
    assert scored == [8, 10]


def test_same_seed_same_weights_other_seed_differs(data):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=2, patience=10)
    runs = [train_model("A2B2E", x, y, m, xv, yv, mv, cfg, seed=s, progress=False) for s in (7, 7, 8)]
    assert_same_weights(weights(runs[0].model), weights(runs[1].model))
    assert runs[0].history["valid_score"].tolist() == runs[1].history["valid_score"].tolist()
    assert not torch.equal(runs[0].model.emotion.weight, runs[2].model.emotion.weight)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


def test_speed_options_train_and_restore_the_global_flags(data):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=1, patience=10)
    exact = train_model("A2E", x, y, m, xv, yv, mv, cfg, seed=7, progress=False)
    bf16 = train_model("A2E", x, y, m, xv, yv, mv, dataclasses.replace(cfg, amp="bf16"), seed=7, progress=False)
    free = train_model("A2E", x, y, m, xv, yv, mv, dataclasses.replace(cfg, deterministic=False), seed=7,
                       progress=False)
    assert np.isfinite(bf16.history["train_loss"]).all()
    # bfloat16 forward passes change the trained weights (a little); the flag is really applied
    assert not torch.equal(exact.model.emotion.weight, bf16.model.emotion.weight)
    assert torch.allclose(exact.model.emotion.weight, bf16.model.emotion.weight, atol=0.05)
    assert np.isfinite(free.history["train_loss"]).all()
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark


def test_autocast_modes():
    assert isinstance(train.autocast(torch.device("cpu"), "off"), contextlib.nullcontext)
    with train.autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with pytest.raises(MerError, match="amp must be one of"):
        train.autocast(torch.device("cpu"), "fp8")


def test_epoch_losses_are_the_mean_of_the_step_losses(data, monkeypatch):
    (x, y, m), (xv, yv, mv) = data
    setup = train.check_inputs("A2M2E", x, y, m, xv, yv, mv, CFG, "cpu")
    state = train.init_state("A2M2E", CFG, 5, torch.device("cpu"))
    steps = []
    original = train.train_step

    def recording_step(*args, **kwargs):
        losses = original(*args, **kwargs)
        steps.append([float(v) for v in losses])
        return losses

    monkeypatch.setattr(train, "train_step", recording_step)
    record = train.train_epoch(state, setup, 1)
    assert len(steps) == len(x) // CFG.batch_size
    # summed on the device in float64: exactly what adding the Python floats gives
    assert record["train_loss"] == sum(s[0] for s in steps) / len(steps)
    assert record["train_midlevel_mse"] == sum(s[2] for s in steps) / len(steps)


def test_killed_run_resumes_bit_identically(data, tmp_path):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=4, patience=10)
    full = train_model("A2M2E", x, y, m, xv, yv, mv, cfg, seed=5, progress=False)

    class Killed(Exception):
        pass

    def kill_after_2(e):
        if e.epoch == 2:
            raise Killed

    state = tmp_path / "state.pt"
    with pytest.raises(Killed):
        train_model("A2M2E", x, y, m, xv, yv, mv, cfg, seed=5, progress=False, state_path=state,
                    hooks=[kill_after_2])
    assert state.exists()
    torch.load(state, weights_only=True)
    np.random.seed(999)  # disturb the global RNGs: the state must restore them
    torch.manual_seed(999)
    resumed = train_model("A2M2E", x, y, m, xv, yv, mv, cfg, seed=5, progress=False, state_path=state)
    assert resumed.sessions == 2 and resumed.epochs_run == 4
    assert_same_weights(weights(full.model), weights(resumed.model))
    cols = [c for c in full.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(full.history[cols], resumed.history[cols])
    assert full.cost == resumed.cost and full.best_epoch == resumed.best_epoch


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_resume_file_is_discarded_with_a_warning(data, tmp_path, damage):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=2, patience=10)
    fresh = train_model("A2E", x, y, m, xv, yv, mv, cfg, seed=5, progress=False)
    state = tmp_path / "state.pt"
    train_model("A2E", x, y, m, xv, yv, mv, cfg, seed=5, progress=False, state_path=state)  # leaves state.pt
    if damage == "truncated":  # e.g. a copy interrupted mid-file
        state.write_bytes(state.read_bytes()[:1000])
        expected = rf"{state}: damaged torch file \(RuntimeError: .+\); discarding it: training starts over"
    else:  # loadable, but not a resume state of this model
        torch.save({"model": {"emotion.weight": torch.zeros(3)}}, state)
        expected = rf"{state}: not a resume state of this model \(.+\); discarding it: training starts over"
    torch.manual_seed(999)
    with pytest.warns(UserWarning, match=expected):
        again = train_model("A2E", x, y, m, xv, yv, mv, cfg, seed=5, progress=False, state_path=state)
    assert again.sessions == 1 and again.epochs_run == 2
    assert_same_weights(weights(fresh.model), weights(again.model))
    assert fresh.cost == again.cost
    with pytest.raises(MerError, match=rf"{tmp_path / 'gone' / 'state.pt'}: missing"):
        train.load_state(tmp_path / "gone" / "state.pt", train.init_state("A2E", cfg, 5, torch.device("cpu")),
                         torch.device("cpu"))


def assert_same_loop(a: train.LoopState, b: train.LoopState) -> None:
    """Equal counters and histories (NaN equal to NaN, ``seconds`` ignored)."""
    assert dataclasses.replace(a, history=[]) == dataclasses.replace(b, history=[])
    pd.testing.assert_frame_equal(pd.DataFrame(a.history), pd.DataFrame(b.history))


def rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def test_training_state_save_and_load_round_trip(data, tmp_path):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=3, patience=10)
    setup = train.check_inputs("A2M2E", x, y, m, xv, yv, mv, cfg, "cpu")
    path = tmp_path / "state.pt"
    with train.deterministic_mode(setup.device):
        state = train.init_state("A2M2E", cfg, 5, setup.device)
        end = train.run_epoch(state, setup, path)
        assert end.epoch == 1 and state.loop.history == [end.record]
        saved = torch.load(path, weights_only=True)
        assert set(saved) == {"model", "optimizer", "best_state", "order_rng", "rng", "loop", "cost"}
        assert list(saved["loop"]) == list(state.loop.as_dict()) and saved["cost"] == state.cost.as_dict()
        assert_same_loop(train.LoopState.from_dict(saved["loop"]), state.loop)
        at_save = (weights(state.model), dict(state.best_weights), state.order.get_state(), copy.deepcopy(state.loop),
                   dataclasses.replace(state.cost), rng_states())
        next_record = pd.Series(train.run_epoch(state, setup).record).drop("seconds")  # the uninterrupted run

        torch.manual_seed(999)  # the fresh state of a restarted process: other seed, disturbed RNGs
        np.random.seed(999)
        random.seed(999)
        restored = train.init_state("A2M2E", cfg, 6, setup.device)
        train.load_state(path, restored, setup.device)
        assert_same_weights(weights(restored.model), at_save[0])
        assert_same_weights(restored.best_weights, at_save[1])
        assert torch.equal(restored.order.get_state(), at_save[2])
        assert_same_loop(restored.loop, dataclasses.replace(at_save[3], sessions=2))
        assert restored.cost == at_save[4]
        now = rng_states()
        assert torch.equal(now[0], at_save[5][0]) and np.array_equal(now[1], at_save[5][1]) and now[2] == at_save[5][2]
        # it continues exactly as the uninterrupted run (the optimiser state included)
        record = pd.Series(train.run_epoch(restored, setup).record).drop("seconds")
    pd.testing.assert_series_equal(record, next_record)
    assert_same_weights(weights(restored.model), weights(state.model))


def test_adversarial_extension_point(data):
    (x, y, m), (xv, yv, mv) = data
    calls = []

    def step(model, xb, yb, epoch, cost):
        calls.append(epoch)
        if epoch % 2:
            return None
        cost.add(forward=3 * len(xb), backward=3 * len(xb))
        return xb + 0.1

    cfg = dataclasses.replace(CFG, max_epochs=2, patience=10)
    with pytest.raises(MerError, match="adversarial_step"):
        train_model("aA2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False)
    adv = train_model("aA2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False, adversarial_step=step)
    plain = train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False)
    assert calls == [1] * 4 + [2] * 4
    assert adv.cost.adversarial_steps == 4 and adv.cost.optimizer_steps == 12
    assert adv.cost.train_forward == 2 * 16 + 4 * (3 * 4 + 4)
    assert math.isnan(adv.history["train_adversarial_mse"][0]) and adv.history["train_adversarial_mse"][1] > 0
    h1 = plain.history.drop(columns="seconds").iloc[0]
    pd.testing.assert_series_equal(adv.history.drop(columns="seconds").iloc[0], h1)  # epoch 1: no attack
    assert not torch.equal(adv.model.emotion.weight, plain.model.emotion.weight)


def test_input_errors(data):
    (x, y, m), (xv, yv, mv) = data
    with pytest.raises(MerError, match="mid-level"):
        train_model("A2M2E", x, y, None, xv, yv, mv, CFG, seed=1, progress=False)
    with pytest.raises(MerError, match="mid-level"):
        train_model("A2B2E", x, y, m, xv, yv, None, CFG, seed=1, progress=False)
    with pytest.raises(MerError, match="shape"):
        train_model("A2E", x[:, 0], y, None, xv, yv, None, CFG, seed=1, progress=False)
    with pytest.raises(MerError, match="batch"):
        train_model("A2E", x[:3], y[:3], None, xv, yv, None, CFG, seed=1, progress=False)


def test_cost_add():
    c = Cost()
    c.add(forward=5, backward=2)
    assert c.as_dict()["train_forward"] == 5 and c.train_backward == 2
