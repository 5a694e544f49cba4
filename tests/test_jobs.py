"""The job runner: in-process and worker-pool execution give the same results; failures are reported."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from fakes import fake_prepared

from mer_lib import jobs
from mer_lib.config import TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models import stage as model_stage


@pytest.mark.parametrize("workers", [0, 2])
def test_results_in_job_order(workers):
    assert jobs.run_jobs(math.factorial, [5, 3, 4, 0], workers, progress=False) == [120, 6, 24, 1]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_job_is_reported_after_the_others_ran(workers, tmp_path):
    with pytest.raises(MerError, match=r"1 of 3 jobs .*\n  - minus one: ValueError"):
        jobs.run_jobs(math.factorial, [3, -1, 4], workers, names=["three", "minus one", "four"], progress=False)


def test_job_threads_fixed_and_restored():
    before = torch.get_num_threads()
    assert jobs.run_jobs(_threads, [None], 0, progress=False) == [jobs.JOB_THREADS]
    assert torch.get_num_threads() == before


def _threads(_):
    return torch.get_num_threads()


def test_default_workers(monkeypatch):
    monkeypatch.setenv(jobs.WORKERS_ENV, "3")
    assert jobs.default_workers(10, "cpu") == 3
    assert jobs.default_workers(1, "cpu") == 0  # one job: in-process
    monkeypatch.setenv(jobs.WORKERS_ENV, "0")
    assert jobs.default_workers(10, "cpu") == 0
    monkeypatch.setenv(jobs.WORKERS_ENV, "two")
    with pytest.raises(MerError, match="MER_WORKERS"):
        jobs.default_workers(10, "cpu")
    with pytest.raises(MerError, match="workers"):
        jobs.run_jobs(math.factorial, [1, 2], -1, progress=False)


def test_pool_training_is_bit_identical_to_in_process(tmp_path):
    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=TrainConfig(
        width=0.0625, max_epochs=2, patience=2, lr=1e-3, batch_size=4, seeds=(3, 4), val_drop_last=False))
    serial = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "a", device="cpu", progress=False,
                                   workers=0)
    pooled = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "b", device="cpu", progress=False,
                                   workers=2)
    assert list(serial) == list(pooled) == [("A2E", 3), ("A2E", 4)]
    for key in serial:
        assert serial[key].name == pooled[key].name  # same configuration hash
        assert (serial[key] / "model.pt").read_bytes() == (pooled[key] / "model.pt").read_bytes()
        assert (serial[key] / "metrics.json").read_text() == (pooled[key] / "metrics.json").read_text()
    # finished models are reused: nothing is submitted again
    again = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "b", device="cpu", progress=False,
                                  workers=2)
    assert again == pooled


def test_pool_attacks_are_bit_identical_to_in_process(tmp_path):
    from mer_lib.attacks.stage import attack_many
    from mer_lib.config import AttackConfig

    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=TrainConfig(
        width=0.0625, max_epochs=1, patience=1, lr=1e-3, batch_size=4, seeds=(3,), val_drop_last=False))
    models = model_stage.train_systems(prepared, ["A2M2E"], profile, tmp_path / "m", device="cpu", progress=False,
                                   workers=0)
    config = AttackConfig(lr=0.05, max_iters=4, bounded_steps=3)
    settings = [("paper", None), ("bounded", 0.1)]
    serial = attack_many(models, prepared, tmp_path / "a", settings, config, progress=False, workers=0)
    pooled = attack_many(models, prepared, tmp_path / "b", settings, config, progress=False, workers=2)
    for setting in settings:
        a, b = serial[setting], pooled[setting]
        assert Path(a["result_dir"][0]).name == Path(b["result_dir"][0]).name
        assert (Path(a["result_dir"][0]) / "attack.csv").read_bytes() == \
            (Path(b["result_dir"][0]) / "attack.csv").read_bytes()
