"""Pass counts of the protocol's jobs against what training and attacks record; arithmetic; wall-time model."""
from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from fakes import FBINS, T, fake_prepared

from mer_lib import artifacts
from mer_lib.attacks import protocol_cost as pc
from mer_lib.attacks.adversarial_training import PaperAdversary
from mer_lib.attacks.stage import attack_model
from mer_lib.config import AttackConfig, TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models.nets import forward_macs
from mer_lib.models.stage import train_system

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = (16, 4, 4)  # fake_prepared's split
# patience = epoch budget: no early stopping, so the training counts are exact
TRAIN = TrainConfig(width=0.0625, max_epochs=4, patience=4, lr=1e-3, batch_size=3, seeds=(1,), val_drop_last=True,
                    refit_head=True)
ATTACK = AttackConfig(max_iters=4, adv_train_iters=3, adv_train_lr=0.05, adv_every=2, bounded_steps=3)


def recorded_passes(folder) -> dict:
    cost = artifacts.read_json(folder / "cost.json")
    return {"forward": cost["train_forward"] + cost["eval_forward"], "backward": cost["train_backward"]}


@pytest.mark.parametrize("system", ["A2E", "A2M2E", "aA2B2E"])
def test_training_passes_match_the_recorded_cost(tmp_path, system):
    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=TRAIN, attack=ATTACK)
    step = PaperAdversary(ATTACK) if system == "aA2B2E" else None
    folder = train_system(prepared, system, 1, profile, tmp_path / "run", progress=False, adversarial_step=step,
                          adversarial_config=None if step is None else step.config)
    bound = pc.training_passes(system, TRAIN, ATTACK, SIZES)
    got = recorded_passes(folder)
    assert bound["epochs"] == 4
    if step is None:
        assert bound["backward_input"] == 0
        assert got == {"forward": bound["forward"], "backward": bound["backward_weights"]}
        return
    # the adversary may stop an excerpt early: its own passes are at most the bound, the rest is exact
    attacked = 2 * (16 // 3) * 3  # epochs 2 and 4, five batches of 3
    assert step.attacked_batches * 3 == attacked
    assert step.forward_passes <= attacked * ATTACK.adv_train_iters
    assert step.backward_passes <= bound["backward_input"] == attacked * (ATTACK.adv_train_iters - 1)
    assert got["forward"] - step.forward_passes == bound["forward"] - attacked * ATTACK.adv_train_iters
    assert got["backward"] - step.backward_passes == bound["backward_weights"]


def test_attack_passes_match_the_recorded_summary(tmp_path):
    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=dataclasses.replace(TRAIN, max_epochs=1, patience=1))
    folder = train_system(prepared, "A2E", 1, profile, tmp_path / "run", progress=False)
    bounded = artifacts.read_json(attack_model(folder, prepared, tmp_path / "run", "bounded", ATTACK, eps=0.1,
                                               progress=False) / "summary.json")
    assert {"forward": bounded["forward_passes"], "backward_input": bounded["backward_passes"]} == {
        k: v for k, v in pc.attack_passes("bounded", ATTACK, 4).items() if k != "backward_weights"}
    paper = artifacts.read_json(attack_model(folder, prepared, tmp_path / "run", "paper", ATTACK,
                                             progress=False) / "summary.json")
    bound = pc.attack_passes("paper", ATTACK, 4)
    assert paper["forward_passes"] == paper["example_iterations"] <= bound["forward"] == 16
    assert paper["backward_passes"] <= bound["backward_input"] == 12
    with pytest.raises(MerError, match="mode"):
        pc.attack_passes("pgd", ATTACK, 4)


def test_epochs_out_of_the_budget_is_an_error():
    with pytest.raises(MerError, match="between 1 and the budget 4"):
        pc.training_passes("A2E", TRAIN, ATTACK, SIZES, epochs=5)
    assert pc.training_passes("A2E", TRAIN, ATTACK, SIZES, epochs=2)["backward_weights"] == 2 * 15


def test_arithmetic_of_a_training_step_and_an_attack_iteration():
    macs = forward_macs("A2E", 0.5, (T, FBINS))
    step = pc.job_gflop("A2E", 0.5, {"forward": 1, "backward_weights": 1, "backward_input": 0}, (T, FBINS))
    iteration = pc.job_gflop("A2E", 0.5, {"forward": 1, "backward_weights": 0, "backward_input": 1}, (T, FBINS))
    assert step == pytest.approx(6 * macs / 1e9) and iteration == pytest.approx(4 * macs / 1e9)


def test_protocol_jobs_of_the_quick_and_paper_profiles():
    quick = pc.protocol_jobs("quick")
    seeds = get_profile("quick").train.seeds
    assert pc.split_sizes("quick") == (288, 36, 36)
    # 05: the paper-mode attack, 3 L-infinity and 3 L2 radii, for 25 models
    assert quick.groupby("notebook").size().to_dict() == {"02": 10, "03": 5, "04": 10, "05": 25 * 7}
    assert quick[quick["notebook"] == "05"]["setting"].unique().tolist() == [
        "paper", "bounded-eps0.03", "bounded-eps0.1", "bounded-eps0.3", "bounded-l2-eps2", "bounded-l2-eps6",
        "bounded-l2-eps20"]
    adversarial = quick[quick["system"] == "aA2E"].iloc[0]
    plain = quick[quick["system"] == "A2E"].iloc[0]
    # quick: 10 epochs of 36 batches of 8, the adversary in epochs 5 and 10 (5 iterations)
    assert plain["backward_weights"] == 10 * 288 and plain["forward"] == 10 * 288 + 10 * 36 + 360 + 288
    assert adversarial["backward_input"] == 2 * 288 * 4 and adversarial["forward"] == plain["forward"] + 2 * 288 * 6
    assert set(quick["seed"]) == set(seeds)
    paper = pc.protocol_jobs("paper-synthetic")
    share = paper.groupby("notebook")["gflop"].sum() / paper["gflop"].sum()
    assert len(paper) == 50 + 50 * 9 and share["04"] > 0.5  # adversarial training dominates the arithmetic


def test_makespan_and_predicted_seconds():
    assert pc.makespan([3, 1, 1, 1], 2) == 3 and pc.makespan([1, 1, 1], 2) == 2 and pc.makespan([], 4) == 0
    with pytest.raises(MerError, match="workers"):
        pc.makespan([1.0], 0)
    jobs = pd.DataFrame({"notebook": ["02", "02", "05", "05"], "setting": ["train", "train", "paper", "bounded-eps0.1"],
                         "forward": [10, 10, 4, 4], "backward_weights": [6, 6, 0, 0], "backward_input": [0, 0, 3, 3],
                         "gflop": [1.0, 1.0, 0.5, 0.5]})
    rates = {"train_step": 1.0, "attack_iteration": 0.5, "forward": 0.25}
    np_seconds = pc.job_seconds(jobs, rates).tolist()
    assert np_seconds == [6 + 1.0, 6 + 1.0, 1.5 + 0.25, 1.5 + 0.25]
    table = pc.predict_seconds(jobs, rates, workers=2).set_index("notebook")
    assert table.loc["02", "wall_seconds"] == 7.0 and table.loc["02", "job_seconds"] == 14.0
    assert table.loc["05", "wall_seconds"] == 3.5  # two lists of one job each
    with pytest.raises(MerError, match="lacks"):
        pc.job_seconds(jobs, {"forward": 1.0})
