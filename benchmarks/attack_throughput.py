"""Attack throughput: a reference-style one-excerpt-at-a-time loop vs the batched engine.

The same model and the same excerpts are attacked, in one process, by

* a faithful reference-style loop (protocol §6.1 as the reference runs it): one
  excerpt at a time, the model's parameters still requiring gradients (so
  every backward pass also computes weight gradients), one
  ``torch.optim.Adam`` per excerpt, and per-iteration metrics on the host:
  the prediction copied to the CPU, MSE in numpy and ``scipy.stats.pearsonr``
  (on float64 copies), the best perturbation copied to the CPU whenever it
  improves, the discarded clamp; only the per-iteration progress print is
  left out;
* the batched engine (:func:`mer_lib.attacks.engine.paper_attack`): the whole batch
  at once, parameters frozen, metrics on the device, one host sync per
  iteration;

and the per-example results are compared (iterations, thresholds and
converged flags equal; predictions and norms within 1e-5). Rates are
example-iterations per second (one example-iteration = one forward and at
most one backward pass of one excerpt). Also measured: the batched engine at
the attack-stage batch (36 excerpts) and at the adversarial-training batch
(8), at the quick width, which sizes the quick/smoke attack budgets.

Inputs are random standardised spectrograms ``(1, 313, 149)`` and random
labels, the model freshly initialised: the cost per iteration does not
depend on the weights or the data (the attack never converges here).

Usage::

    python benchmarks/attack_throughput.py [--iters 20] [--excerpts 8] [--widths 0.125 1.0]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch
from machine import machine_record  # benchmarks/machine.py (the script's folder is on sys.path)

from mer_lib import artifacts
from mer_lib.attacks.engine import paper_attack
from mer_lib.models.nets import build_model

INPUT = (1, 313, 149)
SYSTEM = "A2M2E"


def reference_style_attack(model, x: torch.Tensor, y: torch.Tensor, lr: float, max_iters: int) -> dict:
    """One excerpt ``(1, 1, T, F)``, as the reference implementation runs it (see the module docstring)."""
    model.eval()
    delta = torch.zeros_like(x)
    delta.requires_grad = True
    opt = torch.optim.Adam([delta], lr=lr)
    best = delta.detach().cpu().clone()
    t = None
    converged = False
    new_pred = None
    it = 1
    y_host = y.cpu()
    for it in range(1, max_iters + 1):
        new_pred = model(x + delta).emotions
        host = new_pred.detach().cpu()
        _mse = float(np.mean((y_host.numpy().astype(np.float64) - host.numpy().astype(np.float64)) ** 2))
        corr = float(scipy.stats.pearsonr(y_host.squeeze().numpy().astype(np.float64),
                                          host.squeeze().numpy().astype(np.float64))[0])
        if not t:
            t = math.ceil(corr * 10) / 10
        if corr <= t:
            best = delta.detach().cpu().clone()
            if t >= -0.9:
                t -= 0.1
            else:
                converged = True
                break
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(new_pred, y)
        loss.backward()
        delta.grad = torch.sign(delta.grad)
        delta.grad *= -1.0
        opt.step()
        with torch.no_grad():
            delta.clamp(min=-0.001, max=0.001)  # result discarded, as in the reference
    norm = torch.sqrt((best ** 2).sum()).item()
    return {"iterations": it, "converged": converged, "t": t, "norm": norm,
            "new": new_pred.detach().cpu().numpy()[0]}


def compare(ref: list[dict], batched) -> dict:
    """Largest differences between the two implementations."""
    same = all(r["iterations"] == batched.iterations[i] and r["converged"] == batched.converged[i]
               and r["t"] == batched.adv_target[i] for i, r in enumerate(ref))
    pred = max(float(np.abs(r["new"] - batched.adv_emotions[i]).max()) for i, r in enumerate(ref))
    norm = max(abs(r["norm"] - batched.l2[i]) / max(1.0, r["norm"]) for i, r in enumerate(ref))
    return {"iterations_thresholds_converged_equal": bool(same), "max_abs_prediction_difference": pred,
            "max_rel_norm_difference": norm, "identical_within_1e-5": bool(same and pred <= 1e-5 and norm <= 1e-5)}


def compare_width(width: float, n: int, iters: int, lr: float = 0.002) -> dict:
    """Reference-style loop vs batched engine at one width."""
    torch.manual_seed(0)
    model = build_model(SYSTEM, width).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, *INPUT, generator=g)
    y = 0.1 + 0.7 * torch.rand(n, 8, generator=g)

    paper_attack(model, x[:1], y[:1], lr, 2)  # warm-up (allocator, oneDNN primitives)
    t0 = time.perf_counter()
    ref = [reference_style_attack(model, x[i:i + 1], y[i:i + 1], lr, iters) for i in range(n)]
    ref_seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)

    runs = {}
    for cl in (False, True):
        t0 = time.perf_counter()
        res = paper_attack(model, x, y, lr, iters, channels_last=cl)
        runs[cl] = (time.perf_counter() - t0, res)
    ex_it = sum(r["iterations"] for r in ref)
    out = {"width": width, "excerpts": n, "iterations": iters, "example_iterations": ex_it,
           "reference_style": {"seconds": ref_seconds, "example_iterations_per_second": ex_it / ref_seconds}}
    for cl, (sec, res) in runs.items():
        key = "batched_channels_last" if cl else "batched"
        out[key] = {"seconds": sec, "example_iterations_per_second": int(res.iterations.sum()) / sec,
                    "speedup_vs_reference_style": ref_seconds / sec, "agreement": compare(ref, res)}
    return out


def engine_rate(width: float, batch: int, iters: int, repeats: int = 2, channels_last: bool = True) -> dict:
    """Batched-engine example-iterations per second at a batch size (median of ``repeats``)."""
    torch.manual_seed(0)
    model = build_model(SYSTEM, width).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, *INPUT, generator=g)
    y = 0.1 + 0.7 * torch.rand(batch, 8, generator=g)
    paper_attack(model, x, y, 0.002, 2, channels_last=channels_last)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = paper_attack(model, x, y, 0.002, iters, channels_last=channels_last)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"width": width, "batch": batch, "iterations": iters, "channels_last": channels_last,
            "median_seconds": sec, "example_iterations_per_second": int(res.iterations.sum()) / sec}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write the JSON, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--excerpts", type=int, default=8)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125, 1.0])
    parser.add_argument("--quick-width", type=float, default=0.125)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "attack_throughput.json"))
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    comparisons = []
    for width in args.widths:
        r = compare_width(width, args.excerpts, args.iters)
        comparisons.append(r)
        print(f"width {width:g}: reference-style {r['reference_style']['example_iterations_per_second']:.1f} "
              f"ex-it/s, batched {r['batched']['example_iterations_per_second']:.1f} "
              f"(x{r['batched']['speedup_vs_reference_style']:.2f}), batched channels-last "
              f"{r['batched_channels_last']['example_iterations_per_second']:.1f} "
              f"(x{r['batched_channels_last']['speedup_vs_reference_style']:.2f}); identical: "
              f"{r['batched']['agreement']['identical_within_1e-5']}", flush=True)
    sizing = [engine_rate(args.quick_width, b, args.iters, channels_last=cl) for b in (36, 8) for cl in (True, False)]
    for s in sizing:
        print(f"engine width {s['width']:g} batch {s['batch']} channels_last={s['channels_last']}: "
              f"{s['example_iterations_per_second']:.1f} ex-it/s", flush=True)
    result = {
        "what": f"paper-mode attack of {SYSTEM} on random ({', '.join(map(str, INPUT))}) inputs: reference-style "
                "one-at-a-time loop vs the batched engine; rates in example-iterations per second",
        "machine": machine_record(load_before),
        "comparisons": comparisons, "engine_sizing": sizing,
    }
    artifacts.write_json(args.out, result)
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main()
