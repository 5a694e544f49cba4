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
from mer_lib.data.cache import spectrogram_digest
from mer_lib.errors import MerError
from mer_lib.models import stage as model_stage
from mer_lib.models.nets import memory_format_name
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
                                               "checksums.json", "metrics.json"}
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
    assert memory_format_name(model) == "channels_last"  # as trained (TrainConfig.channels_last)
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


def test_speed_options_enter_the_hash_only_off_their_defaults():
    data = {"spectrogram_hash": "0" * 64}
    base = TrainConfig(width=0.0625, max_epochs=1)
    config = model_stage.run_config("A2E", 3, base, data)
    assert "amp" not in config["train"] and "deterministic" not in config["train"]  # keys of older models kept
    for option in ({"amp": "bf16"}, {"deterministic": False}):
        other = model_stage.run_config("A2E", 3, dataclasses.replace(base, **option), data)
        assert other["train"].items() >= option.items()
        assert artifacts.config_hash(other) != artifacts.config_hash(config)


# --------------------------------------------------------------------------- integrity of the artifacts
def test_the_model_hash_covers_the_spectrogram_content(prepared, tmp_path):
    profile = smoke_profile()
    manifest_path = prepared.cache_dir / "manifest.json"
    manifest = artifacts.read_json(manifest_path)
    for name, entry in manifest["files"].items():
        entry.update(spectrogram_size=100, spectrogram_sha256=f"{int(name):064x}")
    artifacts.write_json(manifest_path, manifest)
    clean = model_dir_of(prepared, profile, "A2E", 3, tmp_path)
    manifest["files"]["002"]["spectrogram_sha256"] = "f" * 64  # same audio, other spectrogram content
    artifacts.write_json(manifest_path, manifest)
    assert model_dir_of(prepared, profile, "A2E", 3, tmp_path) != clean
    assert model_stage.data_fingerprint(prepared)["spectrogram_hash"] == spectrogram_digest(manifest)


@pytest.mark.parametrize("damage", ["truncated model.pt", "same-size model.pt", "truncated metrics.json",
                                    "missing checksums.json"])
def test_a_damaged_finished_model_is_retrained_with_a_warning(prepared, tmp_path, damage):
    profile = smoke_profile(max_epochs=1)
    out = train_system(prepared, "A2E", 3, profile, tmp_path / "run", progress=False)
    assert artifacts.checksum_problem(out, model_stage.RECORDED_FILES) is None
    good = {"model.pt": (out / "model.pt").read_bytes()}
    name = damage.split()[-1]
    path = out / name
    data = bytearray(path.read_bytes())
    if damage.startswith("truncated"):
        path.write_bytes(bytes(data[: len(data) // 2]))
        expected = rf"{path}: damaged (JSON file|\(its size or SHA-256 differs)"
    elif damage.startswith("same-size"):
        data[-200] ^= 0xFF
        path.write_bytes(bytes(data))
        expected = rf"{path}: damaged \(its size or SHA-256 differs from its record in {out / 'checksums.json'}\)"
    else:  # without its record the files cannot be checked: retrained like a damaged model
        (out / "checksums.json").unlink()
        expected = rf"{out / 'checksums.json'}: missing; the files of {out} cannot be checked"
    with pytest.raises(MerError, match=expected + ".*; rerun the training"):
        load_model_dir(out)
    with pytest.warns(UserWarning, match=expected + rf".*; retraining the model in {out}"):
        assert train_system(prepared, "A2E", 3, profile, tmp_path / "run", progress=False) == out
    assert {n: (out / n).read_bytes() for n in good} == good  # the same model again
    assert model_stage.MODELS.problem(out) is None and load_model_dir(out)[1]["seed"] == 3


def test_train_systems_retrains_a_damaged_model_once(prepared, tmp_path, recwarn):
    profile = smoke_profile(max_epochs=1)
    out = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "run", progress=False)[("A2E", 3)]
    good = (out / "model.pt").read_bytes()
    (out / "model.pt").write_bytes(good[:100])
    again = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "run", progress=False)
    assert again[("A2E", 3)] == out and (out / "model.pt").read_bytes() == good
    messages = [str(w.message) for w in recwarn.list]
    assert len(messages) == 1 and messages[0].startswith(f"{out / 'model.pt'}: damaged")


def test_refit_head_is_recorded_and_counted(prepared, tmp_path):
    plain = train_system(prepared, "A2B2E", 3, smoke_profile(), tmp_path / "run", device="cpu", progress=False)
    refit = train_system(prepared, "A2B2E", 3, smoke_profile(refit_head=True), tmp_path / "run", device="cpu",
                         progress=False)
    assert plain != refit  # refit_head is part of the model's configuration hash
    assert json.loads((plain / "metrics.json").read_text())["head_refit"] is None
    metrics = json.loads((refit / "metrics.json").read_text())
    assert metrics["head_refit"]["bottleneck"] is None  # A2B2E's bottleneck has no target
    record = metrics["head_refit"]["emotion"]
    assert record["n"] == 16 and record["ridge"] == 0.01 and record["norm_after"] > 0
    # the training split's MSE in metrics.json is that of the refit layer (float32 forward vs float64 solve)
    assert metrics["train"]["emotions"]["rmse"] ** 2 == pytest.approx(record["after"], rel=1e-4)
    assert json.loads((refit / "cost.json").read_text())["eval_forward"] == 2 * 4 + 24 + 16


def test_a_model_loads_in_its_training_memory_layout(prepared, tmp_path):
    for channels_last, expected in ((True, "channels_last"), (False, "contiguous")):
        out = train_system(prepared, "A2E", 3, smoke_profile(max_epochs=1, channels_last=channels_last),
                           tmp_path / "run", progress=False)
        model, _ = load_model_dir(out)
        assert memory_format_name(model) == expected and not model.training
