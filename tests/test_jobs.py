"""The job runner: in-process, local-pool and Ray execution give the same results; failures are reported."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest
import torch
from fakes import fake_prepared

from mer_lib import jobs
from mer_lib.config import TrainConfig, get_profile
from mer_lib.errors import MerError
from mer_lib.models import stage as model_stage


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of two nodes (head and one worker node), one CPU each."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    with pytest.MonkeyPatch.context() as patch:  # the nodes' workers import the tests' fakes module too
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                 os.environ.get("PYTHONPATH")])))
        cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False})
        cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
        cluster.wait_for_nodes()
    yield jobs.Executor("ray", address=cluster.address)
    cluster.shutdown()


EXECUTORS = [0, 2, "inprocess", "local:2"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_results_in_job_order(executor):
    assert jobs.run_jobs(math.factorial, [5, 3, 4, 0], executor, progress=False) == [120, 6, 24, 1]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failing_job_is_reported_after_the_others_ran(executor, tmp_path):
    with pytest.raises(MerError, match=r"1 of 3 jobs .*\n  - minus one: ValueError"):
        jobs.run_jobs(math.factorial, [3, -1, 4], executor, names=["three", "minus one", "four"], progress=False)


@pytest.mark.slow
def test_ray_runs_jobs_in_order_and_reports_a_failing_one(ray_cluster):
    assert jobs.run_jobs(math.factorial, [5, 3, 4, 0], ray_cluster, progress=False) == [120, 6, 24, 1]
    with pytest.raises(MerError, match=r"1 of 3 jobs .*\n  - minus one: ValueError: .*negative"):
        jobs.run_jobs(math.factorial, [3, -1, 4], ray_cluster, names=["three", "minus one", "four"], progress=False)


@pytest.mark.parametrize("text, expected", [
    ("auto", jobs.Executor()), ("inprocess", jobs.Executor("inprocess")), ("local", jobs.Executor("local")),
    ("local:8", jobs.Executor("local", 8)), ("ray", jobs.Executor("ray")),
    ("ray:auto", jobs.Executor("ray", address="auto")),
    ("ray:10.0.0.1:6379@0.5", jobs.Executor("ray", address="10.0.0.1:6379", gpu_fraction=0.5)),
    ("ray://head:10001", jobs.Executor("ray", address="ray://head:10001")),
    ("ray@0.125", jobs.Executor("ray", gpu_fraction=0.125)), (0, jobs.Executor("inprocess")),
    (1, jobs.Executor("inprocess")), (3, jobs.Executor("local", 3)),
])
def test_parse_executor(text, expected):
    parsed = jobs.parse_executor(text)
    assert parsed == expected
    assert jobs.parse_executor(str(parsed)) == parsed  # the string form round-trips


@pytest.mark.parametrize("bad", ["locl", "local:x", "local:-1", "ray:", "ray@2", "ray@x", "ray:@0.5", -1, 1.5, True])
def test_parse_executor_refuses_malformed_forms(bad):
    with pytest.raises(MerError, match="executor"):
        jobs.parse_executor(bad)


def test_executor_from_the_environment(monkeypatch):
    monkeypatch.setenv(jobs.EXECUTOR_ENV, "local:3")
    assert jobs.parse_executor(None) == jobs.Executor("local", 3)
    monkeypatch.setenv(jobs.EXECUTOR_ENV, "")
    assert jobs.parse_executor(None) == jobs.Executor()


def test_plan_executor(monkeypatch):
    monkeypatch.setenv(jobs.WORKERS_ENV, "2")
    assert jobs.plan_executor("auto", 10, "cpu") == jobs.Plan("local", 2)
    assert jobs.plan_executor("auto", 10, "cuda") == jobs.Plan("inprocess")  # one GPU context by default
    assert jobs.plan_executor("local:4", 3, "cpu") == jobs.Plan("local", 3)  # never more workers than jobs
    assert jobs.plan_executor("local:4", 1, "cpu") == jobs.Plan("inprocess")
    assert jobs.plan_executor("local:4", 10, "cuda:1") == jobs.Plan("local", 4, (1,))  # workers pinned to cuda:1
    assert jobs.plan_executor("ray@0.5", 1, "cuda") == jobs.Plan("ray", gpu_fraction=0.5)
    assert jobs.plan_executor("ray@0.5", 1, "cpu") == jobs.Plan("ray", gpu_fraction=0.0)  # CPU jobs ask no GPU


def _pid(_):
    return os.getpid()


@pytest.mark.slow
def test_the_local_pool_is_kept_between_calls_and_renewed_when_the_environment_changes(monkeypatch):
    first = set(jobs.run_jobs(_pid, range(4), "local:2", progress=False))
    pool = jobs._POOL[1]
    again = set(jobs.run_jobs(_pid, range(4), "local:2", progress=False))
    assert jobs._POOL[1] is pool and (first | again) <= set(pool._processes)
    monkeypatch.setenv("MER_TEST_POOL_MARK", "1")  # workers read the environment when they start
    renewed = set(jobs.run_jobs(_pid, range(4), "local:2", progress=False))
    assert jobs._POOL[1] is not pool and not renewed & (first | again)


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
    with pytest.raises(MerError, match="worker count"):
        jobs.run_jobs(math.factorial, [1, 2], -1, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local:2", "ray"])
def test_training_is_bit_identical_to_in_process(executor, tmp_path, request):
    if executor == "ray":
        executor = request.getfixturevalue("ray_cluster")  # two nodes: the jobs run in two processes
    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=TrainConfig(
        width=0.0625, max_epochs=2, patience=2, lr=1e-3, batch_size=4, seeds=(3, 4), val_drop_last=False))
    serial = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "a", device="cpu", progress=False,
                                       executor="inprocess")
    pooled = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "b", device="cpu", progress=False,
                                       executor=executor)
    assert list(serial) == list(pooled) == [("A2E", 3), ("A2E", 4)]
    for key in serial:
        assert serial[key].name == pooled[key].name  # same configuration hash
        assert (serial[key] / "model.pt").read_bytes() == (pooled[key] / "model.pt").read_bytes()
        assert (serial[key] / "metrics.json").read_text() == (pooled[key] / "metrics.json").read_text()
    # finished models are reused: nothing is submitted again
    again = model_stage.train_systems(prepared, ["A2E"], profile, tmp_path / "b", device="cpu", progress=False,
                                      executor=executor)
    assert again == pooled


@pytest.mark.slow
def test_pool_attacks_are_bit_identical_to_in_process(tmp_path):
    from mer_lib.attacks.stage import attack_many
    from mer_lib.config import AttackConfig

    prepared = fake_prepared(tmp_path)
    profile = dataclasses.replace(get_profile("smoke"), train=TrainConfig(
        width=0.0625, max_epochs=1, patience=1, lr=1e-3, batch_size=4, seeds=(3,), val_drop_last=False))
    models = model_stage.train_systems(prepared, ["A2M2E"], profile, tmp_path / "m", device="cpu", progress=False,
                                   executor=0)
    config = AttackConfig(lr=0.05, max_iters=4, bounded_steps=3)
    settings = [("paper", None), ("bounded", 0.1)]
    serial = attack_many(models, prepared, tmp_path / "a", settings, config, progress=False, executor=0)
    pooled = attack_many(models, prepared, tmp_path / "b", settings, config, progress=False, executor=2)
    for setting in settings:
        a, b = serial[setting], pooled[setting]
        assert Path(a["result_dir"][0]).name == Path(b["result_dir"][0]).name
        assert (Path(a["result_dir"][0]) / "attack.csv").read_bytes() == \
            (Path(b["result_dir"][0]) / "attack.csv").read_bytes()


def _sleep(seconds):
    import time
    time.sleep(seconds)
    return seconds


@pytest.mark.slow
def test_an_interrupt_ends_the_kept_workers_at_once_and_idle_workers_ignore_sigint():
    import signal
    import threading
    import time

    # Python's own SIGINT handling, for this process and the workers it starts (a process started in the
    # background, as by make or CI, inherits SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        jobs._drop_pool()
        jobs.run_jobs(_sleep, [0, 0], "local:2", progress=False)
        workers = list(jobs._POOL[1]._processes.values())
        for process in workers:  # an idle kept worker survives the interrupt a kernel's shutdown sends
            os.kill(process.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(process.is_alive() for process in workers)
        # the caller is interrupted while the workers run long jobs: they are terminated, not awaited
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # as Ctrl-C or a kernel interrupt
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            jobs.run_jobs(_sleep, [60, 60], "local:2", progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 20 and jobs._POOL == [None, None]
    time.sleep(0.5)
    assert not any(process.is_alive() for process in workers)
