"""Training throughput of the emotion models against the machine's matmul speed.

Measures, in one process:

* float32 matrix-multiply speed (``torch.mm`` of two n x n matrices,
  ``2 n^3`` FLOPs): the practical peak of this machine with these threads;
* training steps (forward, MSE loss, backward, Adam step) on random
  ``(8, 1, 313, 149)`` batches at width 1.0 (the paper's model) and at the
  quick profile's width, in the memory layout the training uses
  (``TrainConfig.channels_last``) and in the other one.

FLOPs are counted analytically (:func:`mer_lib.models.nets.forward_macs`): conv
MACs = ``C_out * C_in * k * k * H_out * W_out``, linear MACs = ``in * out``;
x2 for FLOPs (multiply + add), x3 for a training step (forward + the two
backward products: input and weight gradients). BatchNorm, ReLU, pooling and
the optimiser are not counted, so the achieved GFLOP/s is a slight
underestimate of the work done.

Timings are medians over repeats. The load average before and after is
recorded: other processes on the machine slow the 2-thread runs down a lot.
An achieved rate at or above the matmul rate is possible: oneDNN may use
fast-convolution algorithms (e.g. Winograd) that do fewer multiplications
than the direct count assumes.

Usage::

    python benchmarks/train_throughput.py [--quick-width W] [--out benchmarks/results/train_throughput.json]
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
from mer_lib.models.nets import build_model, count_parameters, forward_macs

INPUT = (1, 313, 149)
BATCH = 8
SYSTEM = "A2M2E"


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048, 4096)) -> dict:
    """The best of :func:`matmul_gflops` over several sizes (the machine's practical float32 peak)."""
    per_size = [matmul_gflops(n) for n in sizes]
    best = max(per_size, key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "n": best["n"], "per_size": per_size}


def matmul_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Median float32 GFLOP/s of an n x n matrix product."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"n": n, "repeats": repeats, "median_seconds": med, "gflops": 2 * n ** 3 / med / 1e9,
            "best_gflops": 2 * n ** 3 / min(times) / 1e9}


def train_step_timing(width: float, channels_last: bool, steps: int, warmup: int) -> dict:
    """Median seconds per training step of batch :data:`BATCH` and derived rates."""
    torch.manual_seed(0)
    model = build_model(SYSTEM, width).train()
    x = torch.randn(BATCH, *INPUT)
    y = torch.rand(BATCH, 8)
    m = torch.rand(BATCH, 7)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = 0.5 * torch.nn.functional.mse_loss(out.emotions, y) + 0.5 * torch.nn.functional.mse_loss(
            out.bottleneck, m)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    flops_example = 3 * 2 * forward_macs(SYSTEM, width, INPUT[1:])
    return {"width": width, "channels_last": channels_last, "batch": BATCH, "steps": steps, "warmup": warmup,
            "parameters": count_parameters(model), "forward_gmacs_per_example": forward_macs(SYSTEM, width,
                                                                                          INPUT[1:]) / 1e9,
            "train_gflop_per_example": flops_example / 1e9, "median_step_seconds": med,
            "min_step_seconds": min(times), "examples_per_second": BATCH / med,
            "achieved_gflops": BATCH * flops_example / med / 1e9}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write the JSON, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick-width", type=float, default=get_profile("quick").train.width)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_throughput.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    mm = matmul_peak()
    runs = []
    for width, steps, warmup in ((1.0, 6, 1), (args.quick_width, 30, 3)):
        for cl in (True, False):
            runs.append(train_step_timing(width, cl, steps, warmup))
            r = runs[-1]
            print(f"width {width:g} channels_last={cl}: {r['examples_per_second']:.1f} examples/s, "
                  f"{r['achieved_gflops']:.1f} GFLOP/s ({r['achieved_gflops'] / mm['gflops']:.1%} of matmul)",
                  flush=True)
    mm_after = matmul_peak()
    for r in runs:
        r["fraction_of_matmul"] = r["achieved_gflops"] / mm["gflops"]
        # one quick-profile epoch = 288 training excerpts in 36 steps of 8
        r["train_seconds_per_288_excerpts"] = 36 * r["median_step_seconds"]
    result = {
        "what": f"training steps of {SYSTEM} (forward, MSE, backward, Adam) on random batches "
                f"({BATCH}, {', '.join(map(str, INPUT))}); FLOPs analytic: conv/linear MACs x2 x3 (fwd+bwd)",
        "machine": machine_record(load_before),
        "matmul": mm, "matmul_after": mm_after, "runs": runs,
        "speedup_quick_vs_full_width": {
            str(cl): next(r for r in runs if r["width"] == args.quick_width and r["channels_last"] == cl)[
                "examples_per_second"] / next(r for r in runs if r["width"] == 1.0 and r["channels_last"] == cl)[
                "examples_per_second"] for cl in (True, False)},
    }
    artifacts.write_json(args.out, result)
    print(f"matmul peak: {mm['gflops']:.1f} GFLOP/s at n={mm['n']} (after: {mm_after['gflops']:.1f}); "
          f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
