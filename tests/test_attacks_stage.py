"""The attack stage: logs written, reused and read back; bounded mode and the eps sweep."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import FBINS, T, fake_prepared

from mer_lib import artifacts
from mer_lib.attacks import stage as attack_stage
from mer_lib.attacks.adversarial_training import PaperAdversary
from mer_lib.attacks.logs import read_attack_log, read_attack_table, tidy_columns
from mer_lib.attacks.stage import attack_model
from mer_lib.config import EMOTIONS, AttackConfig, TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models.nets import build_model
from mer_lib.models.stage import train_system

CFG = TrainConfig(width=0.0625, max_epochs=6, patience=10, lr=1e-3, batch_size=4, seeds=(1,),
                  val_drop_last=False, channels_last=False)
FAST = AttackConfig(max_iters=4, adv_train_iters=3, batch_size=3)


pytestmark = pytest.mark.usefixtures("one_thread")


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
    # so does the weights' memory layout (it changes the float rounding the iterations amplify)
    laid_out = attack_model(model.to(memory_format=torch.channels_last), prepared, run_dir, "paper", FAST, seed=7,
                            progress=False)
    assert laid_out not in (out, other) and laid_out.parent == out.parent
    key = artifacts.read_json(laid_out / "config.json")["config"]
    assert key["model_memory_format"] == "channels_last"
    assert artifacts.read_json(out / "config.json")["config"]["model_memory_format"] == "contiguous"


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
    with pytest.raises(MerError, match="no linf eps"):
        attack_stage.bounded_sweep([folder], prepared, run_dir, dataclasses.replace(cfg, eps_values=()))

    # the L2 sweep: its own folders, its own radii
    l2 = attack_stage.bounded_sweep({("aA2E", 3): folder}, prepared, run_dir, dataclasses.replace(cfg, l2_eps_values=(1.0, 4.0)),
                                    norm="l2")
    assert l2["norm"].tolist() == ["l2", "l2"] and l2["eps"].tolist() == [1.0, 4.0] and (sweep["norm"] == "linf").all()
    assert (run_dir / "attacks" / "bounded-l2-eps4" / "aA2E").is_dir()
    rows = read_attack_table(next((run_dir / "attacks" / "bounded-l2-eps4" / "aA2E").iterdir()))
    assert (rows["l2"] <= 4.0 * (1 + 1e-5)).all() and (rows["mode"] == "bounded-l2").all()
    assert l2.loc[1, "dmae"] > l2.loc[0, "dmae"] > 0

    # the plateau check reuses the sweep's attack and repeats it with twice the steps
    plateau = attack_stage.plateau_check({("aA2E", 3): folder}, prepared, run_dir, cfg, 0.05)
    assert plateau.loc[0, "dmae_steps"] == sweep.loc[0, "dmae"]
    assert plateau.loc[0, "more_steps"] == 2 * cfg.bounded_steps == 2 * plateau.loc[0, "steps"]
    assert plateau.loc[0, "dmae_ratio"] == pytest.approx(plateau.loc[0, "dmae_more"] / plateau.loc[0, "dmae_steps"])
    assert plateau.loc[0, "dmae_more"] != plateau.loc[0, "dmae_steps"]  # another attack, not the same one reread
    middle = attack_stage.plateau_check({("aA2E", 3): folder}, prepared, run_dir,
                                        dataclasses.replace(cfg, eps_values=(0.2, 0.05, 0.4)))
    assert middle.loc[0, "eps"] == 0.2 and middle.loc[0, "dmae_steps"] == sweep.loc[1, "dmae"]  # reused
    with pytest.raises(MerError, match="factor"):
        attack_stage.plateau_check([folder], prepared, run_dir, cfg, 0.05, factor=1)


# --------------------------------------------------------------------------
# Damaged results
# --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated summary.json", "same-size attack.csv", "truncated adversarial.npy",
                                    "truncated log.csv"])
def test_a_damaged_attack_is_recomputed_with_a_warning(prepared, tmp_path, damage):
    run_dir = tmp_path / "run"
    torch.manual_seed(0)
    model = build_model("A2E", 0.0625)
    out = attack_model(model, prepared, run_dir, "paper", FAST, seed=7, save_adversarial=True, progress=False)
    assert set(artifacts.read_json(out / "checksums.json")) == {"log.csv", "attack.csv", "adversarial.npy"}
    good = {n: (out / n).read_bytes() for n in ("log.csv", "attack.csv", "adversarial.npy")}
    path = out / damage.split()[-1]
    data = bytearray(path.read_bytes())
    if damage.startswith("same-size"):
        i = data.index(b"A2E")
        data[i:i + 3] = b"A2X"
        path.write_bytes(bytes(data))
        expected = rf"{path}: damaged \(its size or SHA-256 differs from its record in {out / 'checksums.json'}\)"
    else:
        path.write_bytes(bytes(data[: len(data) // 2]))
        expected = rf"{path}: damaged"
    with pytest.warns(UserWarning, match=expected + rf".*; recomputing the attack in {out}"):
        again = attack_model(model, prepared, run_dir, "paper", FAST, seed=7, save_adversarial=True,
                             progress=False)
    assert again == out and {n: (out / n).read_bytes() for n in good} == good
    assert attack_stage.ATTACKS.problem(out) is None


def test_attack_many_recomputes_a_damaged_attack(prepared, tmp_path, recwarn):
    profile = dataclasses.replace(get_profile("smoke"), train=dataclasses.replace(CFG, max_epochs=1))
    folder = train_system(prepared, "A2E", 3, profile, tmp_path / "run", device="cpu", progress=False)
    settings = [("paper", None)]
    first = attack_stage.attack_many([folder], prepared, tmp_path / "run", settings, FAST, progress=False)
    out = Path(first[settings[0]]["result_dir"][0])
    good = (out / "attack.csv").read_bytes()
    (out / "attack.csv").write_bytes(good[:-30])
    again = attack_stage.attack_many([folder], prepared, tmp_path / "run", settings, FAST, progress=False)
    assert (out / "attack.csv").read_bytes() == good
    pd.testing.assert_frame_equal(again[settings[0]], first[settings[0]])
    assert [str(w.message).split(";")[0] for w in recwarn.list] == [
        f"{out / 'attack.csv'}: damaged (its size or SHA-256 differs from its record in {out / 'checksums.json'})"]
    # without its record the files cannot be checked: recomputed like a damaged attack
    (out / "checksums.json").unlink()
    missing = f"{out / 'checksums.json'}: missing; the files of {out} cannot be checked"
    assert attack_stage.ATTACKS.problem(out) == missing
    with pytest.warns(UserWarning, match="recomputing the attack"):
        assert not attack_stage.is_attack_finished(out)
    # a damaged model cannot be recomputed here: an error names its file
    (folder / "model.pt").write_bytes(b"")
    with pytest.raises(MerError, match=rf"{folder / 'model.pt'}: damaged .*; rerun the training"):
        attack_stage.attack_many([folder], prepared, tmp_path / "run", settings, FAST, progress=False)
