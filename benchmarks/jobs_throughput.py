"""Training throughput of independent jobs: one process with N threads vs N one-thread worker processes.

Why the pipeline trains (and attacks) its models as independent jobs in
worker processes with one CPU thread each (:mod:`mer_lib.jobs`): at the quick
profile's width the convolutions are too small for PyTorch's intra-op
threading to pay off, so two one-thread processes do about twice the work of
one two-thread process. Measured in one run of this script:

* ``in_process_threads_all``: one process, ``torch.set_num_threads(cores)``,
  training steps (forward, MSE, backward, Adam) on random
  ``(8, 1, 313, 149)`` batches of the quick model (the baseline);
* ``in_process_threads_1``: the same with one thread;
* ``workers``: ``cores`` worker processes (:func:`mer_lib.jobs.run_jobs`),
  each timing the same loop with one thread, all at once; their examples/s
  are summed.

Usage::

    python benchmarks/jobs_throughput.py [--steps 40] [--out benchmarks/results/jobs_throughput.json]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from machine import machine_record  # benchmarks/machine.py (the script's folder is on sys.path)

from mer_lib import artifacts
from mer_lib.config import get_profile
from mer_lib.jobs import run_jobs
from mer_lib.models.nets import build_model

BATCH = 8


def train_rate(job: tuple[float, int, int]) -> float:
    """Examples/s of ``steps`` training steps of an A2M2E of width ``width`` (after 5 warm-up steps)."""
    width, steps, repeats = job
    torch.manual_seed(0)
    model = build_model("A2M2E", width).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(BATCH, 1, 313, 149).contiguous(memory_format=torch.channels_last)
    y = torch.rand(BATCH, 8)

    def step() -> None:
        opt.zero_grad()
        loss = (model(x).emotions - y).pow(2).mean()
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * BATCH / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "jobs_throughput.json"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    width = get_profile("quick").train.width
    job = (width, args.steps, args.repeats)
    load_before = os.getloadavg()

    torch.set_num_threads(cores)
    all_threads = train_rate(job)
    torch.set_num_threads(1)
    one_thread = train_rate(job)
    per_worker = run_jobs(train_rate, [job] * cores, workers=cores, progress=False)
    pooled = sum(per_worker)

    record = {
        "benchmark": "jobs_throughput", "machine": machine_record(load_before),
        "what": f"A2M2E training steps, width {width}, batch {BATCH}, channels-last, input 313x149",
        "steps": args.steps, "repeats": args.repeats, "cores": cores,
        "examples_per_second": {
            "in_process_threads_all": round(all_threads, 1),
            "in_process_threads_1": round(one_thread, 1),
            "workers_total": round(pooled, 1),
            "workers_each": [round(r, 1) for r in per_worker]},
        "ratio_workers_vs_in_process_threads_all": round(pooled / all_threads, 2),
        "ratio_threads_all_vs_threads_1": round(all_threads / one_thread, 2),
    }
    artifacts.write_json(args.out, record)
    print(artifacts.dumps_json(record))


if __name__ == "__main__":
    main()
