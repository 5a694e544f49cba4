"""PaperAdversary inside the training loop, adversarial_training from a profile, and train_all."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from fakes import fake_prepared, make_data

from mer_lib import artifacts
from mer_lib.attacks.adversarial_training import PaperAdversary, adversarial_training, train_all
from mer_lib.attacks.engine import paper_attack
from mer_lib.config import AttackConfig, TrainConfig, get_profile
from mer_lib.models import stage as model_stage
from mer_lib.models.nets import build_model
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


def test_adversarial_training_defaults():
    step, cfg = adversarial_training()
    assert step.attack_config == AttackConfig()
    assert cfg == {"method": "paper", "attack_version": cfg["attack_version"], "lr": 0.002, "max_iters": 50,
                   "every_n_epochs": 5, "adversary_mode": "eval", "example": "x + best", "loss": "emotion_mse"}
    assert [step.active(e) for e in range(1, 11)] == [False] * 4 + [True] + [False] * 4 + [True]


# --------------------------------------------------------------------------
# train_all
# --------------------------------------------------------------------------
def test_train_all_trains_adversarial_systems_with_the_profiles_adversary(tmp_path, monkeypatch):
    prepared = fake_prepared(tmp_path)
    smoke = get_profile("smoke")
    profile = dataclasses.replace(smoke, train=dataclasses.replace(CFG, max_epochs=1, seeds=(3,)), attack=FAST)
    run_dir = tmp_path / "run"
    dirs = train_all(prepared, profile, run_dir, systems=("aA2E", "A2E"), progress=False, executor=0)
    assert list(dirs) == [("aA2E", 3), ("A2E", 3)]
    for (system, seed), folder in dirs.items():
        assert folder.parent == run_dir / "models" / system and folder.name.startswith(f"seed{seed}-")
        assert (folder / "metrics.json").exists(), system
        assert artifacts.read_json(folder / "metrics.json")["system"] == system
    adversarial = artifacts.read_json(dirs[("aA2E", 3)] / "config.json")["config"]["adversarial"]
    assert adversarial == adversarial_training(profile)[1] and adversarial["max_iters"] == FAST.adv_train_iters
    assert artifacts.read_json(dirs[("A2E", 3)] / "config.json")["config"].get("adversarial") is None

    # a second call reuses every finished model
    monkeypatch.setattr(model_stage, "train_system", lambda *a, **k: pytest.fail("trained again"))
    assert train_all(prepared, profile, run_dir, systems=("aA2E", "A2E"), progress=False, executor=0) == dirs


@pytest.mark.parametrize("plain", ["A2E", "A2B2E"])
def test_an_adversarial_twin_starts_from_the_plain_systems_state_with_identical_results(tmp_path, plain):
    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=dataclasses.replace(CFG, max_epochs=3, seeds=(3,)),
                                  attack=dataclasses.replace(FAST, adv_every=2))
    twin = "a" + plain
    alone = train_all(prepared, profile, tmp_path / "alone", systems=(twin,), progress=False, executor=0)
    train_all(prepared, profile, tmp_path / "shared", systems=(plain,), progress=False, executor=0)  # notebook 02
    shared = train_all(prepared, profile, tmp_path / "shared", systems=(plain, twin), progress=False, executor=0)
    kept = shared[(plain, 3)] / model_stage.SHARED_STATE.format(epoch=1)  # the epoch before the first adversarial
    assert kept.exists()
    a, b = alone[(twin, 3)], shared[(twin, 3)]
    assert a.name == b.name
    for name in ("model.pt", "metrics.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    cost_a, cost_b = artifacts.read_json(a / "cost.json"), artifacts.read_json(b / "cost.json")
    assert (cost_a["sessions"], cost_a["started_from"]) == (1, None)
    assert (cost_b["sessions"], cost_b["started_from"]) == (2, f"{plain}/{kept.parent.name}/{kept.name}")
    assert cost_a["adversarial_steps"] == cost_b["adversarial_steps"] > 0
