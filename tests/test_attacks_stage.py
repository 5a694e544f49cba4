"""Adversarial training step and the attack stage (logs written, reused, read back)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from fakes import FBINS, T, fake_prepared, make_data

from mer_lib import artifacts
from mer_lib.attacks import stage as attack_stage
from mer_lib.attacks.adversarial_training import PaperAdversary, adversarial_training
from mer_lib.attacks.engine import paper_attack
from mer_lib.attacks.logs import read_attack_log, read_attack_table, tidy_columns
from mer_lib.attacks.stage import attack_model
from mer_lib.config import EMOTIONS, AttackConfig, TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models.nets import build_model
from mer_lib.models.stage import train_system
from mer_lib.models.train import Cost, train_model

CFG = TrainConfig(width=0.0625, max_epochs=6, patience=10, lr=1e-3, batch_size=4, seeds=(1,),
                  val_drop_last=False, channels_last=False)
FAST = AttackConfig(max_iters=4, adv_train_iters=3, batch_size=3)


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------
# Adversarial training
# --------------------------------------------------------------------------
def test_adversarial_updates_exactly_in_epochs_that_are_multiples_of_5():
    x, y, m = make_data(22)
    step = PaperAdversary(FAST)
    result = train_model("aA2B2E", x[:16], y[:16], m[:16], x[16:], y[16:], m[16:], CFG, seed=1, progress=False,
                         adversarial_step=step)
    assert result.epochs_run == 6
    assert step.calls == 6 * 4  # after every clean update
    assert step.epochs == [5] * 4 and step.attacked_batches == 4
    c = result.cost
    assert c.adversarial_steps == 4 and c.optimizer_steps == 6 * 4 + 4
    hist = result.history.set_index("epoch")["train_adversarial_mse"]
    assert hist.drop(5).isna().all() and hist[5] > 0
    # the attacks' passes are training cost: clean (6 x 16) + adversarial updates (4 x 4) + attacks
    assert step.forward_passes == 4 * 4 * 3 and step.backward_passes == 4 * 4 * 2  # 3 iterations, no final step
    assert c.train_forward == 6 * 16 + 4 * 4 + step.forward_passes
    assert c.train_backward == 6 * 16 + 4 * 4 + step.backward_passes


def test_adversarial_step_gives_paper_adversaries_and_restores_the_model():
    x, y, _ = make_data(4, seed=2)
    torch.manual_seed(0)
    model = build_model("aA2E", 0.0625).train()
    step = PaperAdversary(AttackConfig(adv_train_iters=6, adv_train_lr=0.01, lr=0.5))  # lr: test-set attack only
    cost = Cost()
    assert step(model, torch.from_numpy(x), torch.from_numpy(y), 4, cost) is None and cost.train_forward == 0
    x_adv = step(model, torch.from_numpy(x), torch.from_numpy(y), 10, cost)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    ref = paper_attack(model, x, y, lr=0.01, max_iters=6)
    np.testing.assert_allclose(x_adv.numpy(), x + ref.delta, atol=1e-6)
    assert cost.train_forward == ref.forward_passes and cost.train_backward == ref.backward_passes
    cfg = step.config
    assert cfg["max_iters"] == 6 and cfg["every_n_epochs"] == 5 and cfg["lr"] == 0.01
    assert artifacts.config_hash(cfg) != artifacts.config_hash(PaperAdversary().config)


def test_adversarial_training_from_profile():
    step, cfg = adversarial_training("smoke")
    assert isinstance(step, PaperAdversary) and cfg == step.config
    attack = getattr(get_profile("smoke"), "attack", None)
    assert step.iters == (attack.adv_train_iters if attack else 50)


# --------------------------------------------------------------------------
# The attack stage
# --------------------------------------------------------------------------
@pytest.fixture()
def prepared(tmp_path):
    return fake_prepared(tmp_path, first_number=101, decimals=5, mean=0.3, std=0.2)


def test_attack_stage_writes_published_and_tidy_logs_and_reuses_them(prepared, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    torch.manual_seed(0)
    model = build_model("A2M2E", 0.0625)
    out = attack_model(model, prepared, run_dir, "paper", FAST, seed=7, save_adversarial=True, progress=False)
    assert out.parent == run_dir / "attacks" / "paper" / "A2M2E" and out.name.startswith("seed7-")
    for name in ("config.json", "log.csv", "attack.csv", "adversarial.npy", "summary.json"):
        assert (out / name).exists(), name
    log = read_attack_log(out / "log.csv")
    tidy = read_attack_table(out)
    test_numbers = prepared.numbers("test")
    assert log["number"].tolist() == tidy["number"].tolist() == test_numbers.tolist()
    assert (tidy["system"] == "A2M2E").all() and (tidy["seed"] == 7).all()
    np.testing.assert_array_equal(log["iterations"], tidy["iterations"])
    np.testing.assert_array_equal(log[tidy_columns("true")].to_numpy(),
                                  prepared.table.loc[test_numbers, list(EMOTIONS)].to_numpy())
    np.testing.assert_allclose(log[tidy_columns("new")].to_numpy(), tidy[tidy_columns("new")].to_numpy(),
                               atol=5e-9)
    assert "snr_db" in tidy and "orig_bottleneck_melodiousness" in tidy and (tidy["mode"] == "paper").all()
    adv = artifacts.read_npy(out / "adversarial.npy")
    assert adv.shape == (4, 1, T, FBINS)
    x = prepared.excerpts(test_numbers)
    np.testing.assert_allclose(np.sqrt(((adv - x) ** 2).reshape(4, -1).sum(1)), tidy["norm"], rtol=1e-5, atol=1e-6)
    summary = artifacts.read_json(out / "summary.json")
    assert summary["n"] == 4 and summary["example_iterations"] == int(tidy["iterations"].sum())

    # rerun: reused without attacking again
    monkeypatch.setattr(attack_stage, "run_attack", lambda *a, **k: pytest.fail("attacked again"))
    assert attack_model(model, prepared, run_dir, "paper", FAST, seed=7, progress=False) == out
    # performance-only settings reuse it too; a setting that changes results does not
    assert attack_model(model, prepared, run_dir, "paper", dataclasses.replace(FAST, batch_size=1), seed=7,
                        progress=False) == out
    monkeypatch.undo()
    other = attack_model(model, prepared, run_dir, "paper", dataclasses.replace(FAST, max_iters=5), seed=7,
                         progress=False)
    assert other != out and other.parent == out.parent


def test_bounded_stage_and_model_folder(prepared, tmp_path):
    run_dir = tmp_path / "run"
    profile = dataclasses.replace(get_profile("smoke"), train=dataclasses.replace(CFG, max_epochs=1))
    step = PaperAdversary(FAST)
    folder = train_system(prepared, "aA2E", 3, profile, run_dir, device="cpu", progress=False,
                          adversarial_step=step, adversarial_config=step.config)
    assert artifacts.read_json(folder / "config.json")["config"]["adversarial"] == step.config
    cfg = dataclasses.replace(FAST, bounded_steps=3)
    out = attack_model(folder, prepared, run_dir, "bounded", cfg, eps=0.05, progress=False)
    assert out.parent == run_dir / "attacks" / "bounded-eps0.05" / "aA2E" and out.name.startswith("seed3-")
    tidy = read_attack_table(out)
    assert (tidy["linf"] <= 0.05).all() and (tidy["eps"] == 0.05).all() and (tidy["iterations"] == 3).all()
    assert tidy["adv_target"].isna().all() and not tidy["converged"].any()
    log = read_attack_log(out / "log.csv")
    assert log["adv_target"].isna().all()
    with pytest.raises(MerError, match="eps"):
        attack_model(folder, prepared, run_dir, "bounded", cfg, progress=False)
    with pytest.raises(MerError, match="mode"):
        attack_model(folder, prepared, run_dir, "pgd", cfg, progress=False)
    with pytest.raises(MerError, match="no finished attack"):
        read_attack_table(tmp_path)
    assert math.isfinite(artifacts.read_json(out / "summary.json")["dmae"])

    # the sweep reuses the eps=0.05 result and stacks per-model metrics over eps
    sweep = attack_stage.bounded_sweep({("aA2E", 3): folder}, prepared, run_dir, cfg, eps_values=(0.05, 0.2))
    assert sweep["eps"].tolist() == [0.05, 0.2] and (sweep["system"] == "aA2E").all()
    assert sweep.loc[0, "dmae"] == pytest.approx(artifacts.read_json(out / "summary.json")["dmae"])
    with pytest.raises(MerError, match="no eps"):
        attack_stage.bounded_sweep([folder], prepared, run_dir, dataclasses.replace(cfg, eps_values=()))
