"""The training stage (mer_lib.models.stage): artifact folders, reuse, resuming, loading."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import assert_same_weights, fake_prepared, weights

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL, TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models import stage as model_stage
from mer_lib.models.stage import load_model_dir, load_trained, train_system
from mer_lib.models.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")


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
    real = model_stage.final_metrics
    monkeypatch.setattr(model_stage, "final_metrics", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        train_system(prepared, "A2B2E", 3, profile, run_dir, progress=False)
    out = model_dir_of(prepared, profile, "A2B2E", 3, run_dir)
    assert (out / "state.pt").exists() and not (out / "metrics.json").exists()
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    monkeypatch.setattr(model_stage, "final_metrics", real)
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
