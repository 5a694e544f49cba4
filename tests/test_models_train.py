"""Training loop, losses, early stopping, determinism, resuming and the artifact stage."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import fake_prepared, make_data
from torch.nn import functional as F

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL, TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models import stage as model_stage
from mer_lib.models import train
from mer_lib.models.nets import build_model, system_spec
from mer_lib.models.stage import load_model_dir, load_trained, train_system
from mer_lib.models.train import Cost, predict, system_loss, train_model, train_step, validation_count, validation_score

CFG = TrainConfig(width=0.0625, max_epochs=3, patience=5, lr=1e-3, batch_size=4, seeds=(1,),
                  val_drop_last=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    x, y, m = make_data(26)
    return (x[:16], y[:16], m[:16]), (x[16:], y[16:], m[16:])


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


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
def scripted(scores):
    """A stub validation returning the given scores, one per epoch."""
    it = iter(scores)
    return lambda model: {"score": next(it)}


def test_early_stopping_stops_after_patience_and_restores_best(data):
    (x, y, m), (xv, yv, mv) = data
    seen = {}
    hook = lambda e: seen.__setitem__(e.epoch, weights(e.model))
    cfg = dataclasses.replace(CFG, max_epochs=20, patience=3)
    # epoch 5 ties the best (ties count as improvement, as in the reference); 6-8 do not improve
    result = train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False, hooks=[hook],
                         validate=scripted([0.1, 0.3, 0.2, 0.25, 0.3, 0.1, 0.29, 0.0, 0.9]))
    assert result.epochs_run == 8 and result.stopped_early and result.best_epoch == 5
    assert result.best_score == 0.3
    assert list(result.history["improved"]) == [True, True, False, False, True, False, False, False]
    assert list(result.history["patience_counter"]) == [0, 0, 1, 2, 0, 1, 2, 3]
    assert_same_weights(weights(result.model), seen[5])
    assert not torch.equal(seen[5]["emotion.weight"], seen[8]["emotion.weight"])
    assert not result.model.training


def test_undefined_scores_do_not_improve(data):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=6, patience=2)
    result = train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False,
                         validate=scripted([float("nan"), 0.2, float("nan"), float("nan"), 1.0]))
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


def test_validation_quirk_drops_the_last_partial_batch(data):
    (x, y, m), (xv, yv, mv) = data
    scored = []
    real = train.predict

    def spy(model, xs, *args, **kwargs):
        scored.append(len(xs))
        return real(model, xs, *args, **kwargs)

    cfg = dataclasses.replace(CFG, max_epochs=1, val_drop_last=True)
    mp = pytest.MonkeyPatch()
    mp.setattr(train, "predict", spy)
    try:
        train_model("A2E", x, y, None, xv, yv, None, cfg, seed=1, progress=False)
        train_model("A2E", x, y, None, xv, yv, None, dataclasses.replace(cfg, val_drop_last=False), seed=1,
                    progress=False)
    finally:
        mp.undo()
    assert scored == [8, 10]


def test_same_seed_same_weights_other_seed_differs(data):
    (x, y, m), (xv, yv, mv) = data
    cfg = dataclasses.replace(CFG, max_epochs=2, patience=10)
    runs = [train_model("A2B2E", x, y, m, xv, yv, mv, cfg, seed=s, progress=False) for s in (7, 7, 8)]
    assert_same_weights(weights(runs[0].model), weights(runs[1].model))
    assert runs[0].history["valid_score"].tolist() == runs[1].history["valid_score"].tolist()
    assert not torch.equal(runs[0].model.emotion.weight, runs[2].model.emotion.weight)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after training


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


# --------------------------------------------------------------------------
# The stage: artifacts in the run directory
# --------------------------------------------------------------------------
@pytest.fixture()
def prepared(tmp_path):
    return fake_prepared(tmp_path)


def smoke_profile(**train):
    values = dict(width=0.0625, max_epochs=2, patience=2, lr=1e-3, batch_size=4, seeds=(3,),
                  val_drop_last=False)
    values.update(train)
    return dataclasses.replace(get_profile("smoke"), train=TrainConfig(**values))


def test_train_system_writes_artifacts_and_reuses_them(prepared, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    profile = smoke_profile()
    out = train_system(prepared, "A2M2E", 3, profile, run_dir, device="cpu", progress=False)
    assert out.parent == run_dir / "models" / "A2M2E" and out.name.startswith("seed3-")
    assert {p.name for p in out.iterdir()} == {"config.json", "model.pt", "history.csv", "cost.json",
                                               "metrics.json"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hash"] == artifacts.config_hash(cfg["config"]) and out.name.endswith(cfg["hash"])
    assert cfg["config"]["train"]["width"] == 0.0625 and cfg["config"]["seed"] == 3
    assert "seeds" not in cfg["config"]["train"] and cfg["config"]["data_hash"]
    metrics = json.loads((out / "metrics.json").read_text())
    for split, n in (("train", 16), ("valid", 4), ("test", 4)):
        assert metrics[split]["emotions"]["n"] == n and set(metrics[split]["emotions"]["r"]) == set(EMOTIONS)
        assert set(metrics[split]["midlevel"]["r"]) == set(MIDLEVEL)
    cost = json.loads((out / "cost.json").read_text())
    assert cost["epochs_run"] == 2 and cost["optimizer_steps"] == 8 and cost["examples_seen"] == 32
    assert cost["eval_forward"] == 2 * 4 + 24 and cost["wall_seconds"] > 0
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2]

    # the model file is a plain state dict; the reloaded model reproduces the test metrics
    state = torch.load(out / "model.pt", weights_only=True)
    assert "emotion.weight" in state
    model, m2 = load_trained(run_dir, "A2M2E", 3, profile, prepared=prepared)
    assert m2 == metrics
    emo, _ = predict(model, prepared.excerpts(prepared.numbers("test")), "cpu")
    y_test = prepared.table.loc[prepared.numbers("test"), list(EMOTIONS)].to_numpy()
    assert float(np.mean(np.abs(emo - y_test))) == pytest.approx(metrics["test"]["emotions"]["mae"], rel=1e-5)

    # second call: reused, not retrained
    stamp = (out / "model.pt").stat().st_mtime_ns
    monkeypatch.setattr(model_stage, "train_model", lambda *a, **k: pytest.fail("retrained"))
    assert train_system(prepared, "A2M2E", 3, profile, run_dir, progress=False) == out
    assert (out / "model.pt").stat().st_mtime_ns == stamp
    # a different configuration gets its own folder; the seed list does not matter
    assert model_dir_of(prepared, profile, "A2M2E", 3, run_dir) == out
    with pytest.raises(MerError, match="no trained A2M2E"):
        load_trained(run_dir, "A2M2E", 3, smoke_profile(width=0.125), prepared=prepared)
    assert load_trained(run_dir, "A2M2E", 3, smoke_profile(seeds=(3, 4, 5)), prepared=prepared)[1] == metrics


def model_dir_of(prepared, profile, system, seed, run_dir):
    config = model_stage.run_config(system, seed, profile.train, model_stage.data_fingerprint(prepared))
    return model_stage.model_dir(run_dir, config)


def test_train_system_interrupted_run_leaves_no_finished_artifact_and_resumes(prepared, tmp_path, monkeypatch):
    profile = smoke_profile()
    reference = train_system(prepared, "A2B2E", 3, profile, tmp_path / "ref", progress=False)

    run_dir = tmp_path / "run"
    real = model_stage._final_metrics
    monkeypatch.setattr(model_stage, "_final_metrics", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_system(prepared, "A2B2E", 3, profile, run_dir, progress=False)
    out = model_dir_of(prepared, profile, "A2B2E", 3, run_dir)
    assert (out / "state.pt").exists() and not (out / "metrics.json").exists()
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    monkeypatch.setattr(model_stage, "_final_metrics", real)
    assert train_system(prepared, "A2B2E", 3, profile, run_dir, progress=False) == out
    assert not (out / "state.pt").exists()
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    assert json.loads((out / "cost.json").read_text())["sessions"] == 2
    ref_model, _ = load_model_dir(reference)
    model, _ = load_model_dir(out)
    assert_same_weights(weights(ref_model), weights(model))


def test_train_system_rejects_adversarial_without_step(prepared, tmp_path):
    with pytest.raises(MerError, match="adversarial_step"):
        train_system(prepared, "aA2E", 3, smoke_profile(), tmp_path / "run", progress=False)
    with pytest.raises(MerError, match="no finished"):
        load_model_dir(tmp_path)


def test_cost_add():
    c = Cost()
    c.add(forward=5, backward=2)
    assert c.as_dict()["train_forward"] == 5 and c.train_backward == 2
