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
converged flags equal; predictions and norms within 1e-5; on a GPU, TF32
convolutions of different batch shapes can differ by more). Rates are
example-iterations per second (one example-iteration = one forward and at
most one backward pass of one excerpt). Also measured (``engine_sizing``):
the batched engine at the attack-stage batch (36 excerpts) and at the
adversarial-training batch (8) (``--batch-sizes``), at the quick width
(``--sizing-widths``), in both memory layouts, and with ``--cudnn-benchmark``
also with cuDNN autotuning; each row has its ratio to the first row
(baseline), measured in the same process.

Everything runs on ``--device`` (default ``cpu``; ``cuda``, ``cuda:1``, ...).
Achieved TFLOP/s count the arithmetic the attack needs, analytically
(:func:`mer_lib.models.nets.forward_macs`): a forward pass and the
input-gradient product of the backward pass, ``2 x 2 x MACs`` per
example-iteration (the reference-style loop's weight gradients are overhead
and not counted). They are compared with the device's peak for the
precision used (TF32 on CUDA devices of compute capability >= 8.0 under
PyTorch's default ``cudnn.allow_tf32``, else float32): the vendor's dense
rate on a GPU (:data:`machine.PEAK_TFLOPS`, ``null`` with a note when
unknown), the measured matmul rate on a CPU. Timings synchronise the device
before every clock read; sizing rates are medians over ``--repeats``.

Inputs are random standardised spectrograms ``(1, 313, 149)`` and random
labels, the model freshly initialised: the cost per iteration does not
depend on the weights or the data (the attack never converges here).

The default output is ``benchmarks/results/attack_throughput.json`` on a CPU
and ``benchmarks/results/attack_throughput_<kind>.json`` on another device
kind (e.g. ``_cuda``). ``--tiny`` shrinks every size so that the
script runs in seconds on a CPU (a check of the script, not a measurement).
``benchmarks/gpu_check.sh`` runs this benchmark on a GPU in its useful
configurations.

Usage::

    python benchmarks/attack_throughput.py [--device cpu|cuda|cuda:1] [--iters 20] [--excerpts 8]
        [--widths 0.125 1.0] [--sizing-widths 0.125] [--batch-sizes 36 8] [--repeats 2]
        [--cudnn-benchmark] [--tiny] [--out FILE]
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import scipy.stats
import torch
from machine import (  # benchmarks/machine.py (the script's folder is on sys.path)
    benchmark_device,
    default_out,
    machine_record,
    median_seconds,
    peak_fields,
    peak_references,
    precision_used,
    synchronize,
)

from mer_lib import artifacts
from mer_lib.attacks.engine import paper_attack
from mer_lib.models.nets import build_model, forward_macs

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


def attack_tflop(width: float) -> float:
    """TFLOP of one example-iteration: forward + input-gradient backward, ``2 x 2 x MACs``."""
    return 2 * 2 * forward_macs(SYSTEM, width, INPUT[1:]) / 1e12


def model_and_batch(width: float, n: int, seed: int, device: torch.device):
    """A fresh eval-mode model on ``device`` and ``n`` random inputs and labels (drawn on the CPU)."""
    torch.manual_seed(0)
    model = build_model(SYSTEM, width).eval().to(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *INPUT, generator=g)
    y = 0.1 + 0.7 * torch.rand(n, 8, generator=g)
    return model, x.to(device), y.to(device)


def laid_out(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """The model with channels-last or contiguous weights (its inputs follow its weights' layout)."""
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def compare_width(width: float, n: int, iters: int, device: torch.device, lr: float = 0.002) -> dict:
    """Reference-style loop vs batched engine at one width, on ``device``."""
    model, x, y = model_and_batch(width, n, 1, device)
    paper_attack(model, x[:1], y[:1], lr, 2)  # warm-up (allocator, oneDNN primitives / cuDNN handles)
    synchronize(device)
    t0 = time.perf_counter()
    ref = [reference_style_attack(model, x[i:i + 1], y[i:i + 1], lr, iters) for i in range(n)]
    synchronize(device)
    ref_seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)

    runs = {}
    for cl in (False, True):
        synchronize(device)
        t0 = time.perf_counter()
        res = paper_attack(laid_out(model, cl), x, y, lr, iters)
        synchronize(device)
        runs[cl] = (time.perf_counter() - t0, res)
    ex_it = sum(r["iterations"] for r in ref)
    out = {"width": width, "excerpts": n, "iterations": iters, "example_iterations": ex_it,
           "reference_style": {"seconds": ref_seconds, "example_iterations_per_second": ex_it / ref_seconds,
                               "achieved_tflops": ex_it / ref_seconds * attack_tflop(width)}}
    for cl, (sec, res) in runs.items():
        key = "batched_channels_last" if cl else "batched"
        rate = int(res.iterations.sum()) / sec
        out[key] = {"seconds": sec, "example_iterations_per_second": rate,
                    "achieved_tflops": rate * attack_tflop(width),
                    "speedup_vs_reference_style": ref_seconds / sec, "agreement": compare(ref, res)}
    return out


def engine_rate(width: float, batch: int, iters: int, device: torch.device, repeats: int = 2,
                channels_last: bool = True, cudnn_benchmark: bool = False) -> dict:
    """Batched-engine example-iterations per second and TFLOP/s at a batch size (median of ``repeats``).

    Parameters
    ----------
    width : float
        Model width.
    batch, iters : int
        Excerpts attacked at once and the iteration budget.
    device : torch.device
        Where the attack runs.
    repeats : int
        Timed attacks (after a 2-iteration warm-up attack).
    channels_last : bool
        Layout of the model's weights (its inputs follow).
    cudnn_benchmark : bool
        cuDNN autotuning on (non-deterministic) for the warm-up and the timings.

    Returns
    -------
    dict
        The configuration, ``precision``, ``median_seconds``, ``min_seconds``,
        ``example_iterations_per_second`` and ``achieved_tflops``.
    """
    model, x, y = model_and_batch(width, batch, 2, device)
    model = laid_out(model, channels_last)
    last = []
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        paper_attack(model, x, y, 0.002, 2)
        t = median_seconds(lambda: last.append(paper_attack(model, x, y, 0.002, iters)),
                           device, repeats=repeats, warmup=0)
    finally:
        torch.backends.cudnn.benchmark = previous
    rate = int(last[-1].iterations.sum()) / t["median_seconds"]
    return {"width": width, "batch": batch, "iterations": iters, "channels_last": channels_last,
            "cudnn_benchmark": cudnn_benchmark, "precision": precision_used(device),
            "median_seconds": t["median_seconds"], "min_seconds": t["min_seconds"], "repeats": repeats,
            "example_iterations_per_second": rate, "achieved_tflops": rate * attack_tflop(width)}


def sizing_rows(args: argparse.Namespace, peaks: dict) -> list[dict]:
    """Every sizing configuration (baseline first), with peak fractions and ratios to the baseline, printed."""
    rows = []
    for width in args.sizing_widths:
        for batch in args.batch_sizes:
            for cl in (True, False):
                for bench in (False, True) if args.cudnn_benchmark else (False,):
                    s = engine_rate(width, batch, args.iters, args.device, args.repeats, cl, bench)
                    s.update(peak_fields(s["achieved_tflops"], peaks[s["precision"]]))
                    base = rows[0] if rows else s
                    s["rate_vs_baseline"] = s["example_iterations_per_second"] / base["example_iterations_per_second"]
                    rows.append(s)
                    frac = ("peak unknown" if s["fraction_of_peak"] is None else
                            f"{s['fraction_of_peak']:.1%} of {s['precision']} peak")
                    print(f"engine width {width:g} batch {batch} channels_last={cl} cudnn_benchmark={bench}: "
                          f"{s['example_iterations_per_second']:.1f} ex-it/s, {s['achieved_tflops']:.4g} TFLOP/s "
                          f"({frac}), x{s['rate_vs_baseline']:.2f} vs baseline", flush=True)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--excerpts", type=int, default=8)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.125, 1.0])
    parser.add_argument("--quick-width", type=float, default=0.125, help="default of --sizing-widths")
    parser.add_argument("--sizing-widths", type=float, nargs="+", help="engine sizing widths (default --quick-width)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[36, 8], help="engine sizing batches")
    parser.add_argument("--repeats", type=int, default=2, help="timed attacks per sizing row")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="also sizing rows with cuDNN autotuning")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke sizes: width 0.0625, 2 excerpts, 3 iterations, batch 4, 1 repeat, small matmuls")
    parser.add_argument("--out", help="default: benchmarks/results/attack_throughput[_<device kind>].json")
    args = parser.parse_args(argv)
    try:
        args.device = benchmark_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    if args.tiny:
        args.widths = args.sizing_widths = [0.0625]
        args.excerpts, args.iters, args.batch_sizes, args.repeats = 2, 3, [4], 1
    args.sizing_widths = args.sizing_widths or [args.quick_width]
    args.out = args.out or default_out("attack_throughput", args.device)
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write the JSON, print a summary."""
    args = parse_args(argv)
    load_before = os.getloadavg()
    device = args.device
    precision = precision_used(device)
    peaks = peak_references(device, [precision], (256, 512) if args.tiny else None)
    comparisons = []
    for width in args.widths:
        r = compare_width(width, args.excerpts, args.iters, device)
        for key in ("reference_style", "batched", "batched_channels_last"):
            r[key].update(peak_fields(r[key]["achieved_tflops"], peaks[precision]))
        comparisons.append(r)
        print(f"width {width:g}: reference-style {r['reference_style']['example_iterations_per_second']:.1f} "
              f"ex-it/s, batched {r['batched']['example_iterations_per_second']:.1f} "
              f"(x{r['batched']['speedup_vs_reference_style']:.2f}), batched channels-last "
              f"{r['batched_channels_last']['example_iterations_per_second']:.1f} "
              f"(x{r['batched_channels_last']['speedup_vs_reference_style']:.2f}); identical: "
              f"{r['batched']['agreement']['identical_within_1e-5']}", flush=True)
    sizing = sizing_rows(args, peaks)
    result = {
        "what": f"paper-mode attack of {SYSTEM} on random ({', '.join(map(str, INPUT))}) inputs on {device}: "
                "reference-style one-at-a-time loop vs the batched engine; rates in example-iterations per second; "
                "TFLOP/s analytic: forward + input gradient, 2 x 2 x MACs per example-iteration",
        "machine": machine_record(load_before, device),
        "options": {"iters": args.iters, "excerpts": args.excerpts, "widths": args.widths,
                    "sizing_widths": args.sizing_widths, "batch_sizes": args.batch_sizes, "repeats": args.repeats,
                    "cudnn_benchmark": args.cudnn_benchmark, "tiny": args.tiny},
        "precision": precision, "peaks": peaks,
        "comparisons": comparisons, "engine_sizing": sizing,
    }
    artifacts.write_json(args.out, result)
    print(f"{precision} matmul {peaks[precision]['matmul']['tflops']:.4g} TFLOP/s; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
