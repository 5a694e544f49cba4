"""Training throughput of the emotion models against the device's peak arithmetic rate.

Measures, in one process on one device (``--device``, default ``cpu``):

* the device's matrix-multiply speed (``torch.mm`` of two n x n matrices,
  ``2 n^3`` FLOPs) in every precision the runs use: the practical peak;
* training steps (forward, MSE loss, backward, Adam step) on random
  ``(B, 1, 313, 149)`` batches, one row per configuration: every width
  (default 1.0, the paper's model, and the quick profile's width) x batch
  size (``--batch-sizes``, default 8) x memory layout (the training's,
  ``TrainConfig.channels_last``, and the other one) x arithmetic (float32;
  with ``--amp bf16`` also ``torch.autocast`` bfloat16) x backend mode
  (PyTorch's defaults; with ``--cudnn-benchmark`` also cuDNN autotuning,
  a non-deterministic mode; with ``--deterministic`` also
  :func:`mer_lib.models.train.deterministic_mode`, which the training uses
  when determinism is requested).

Each row has examples/s, achieved TFLOP/s, the fraction of the device's
peak for the precision it used and of the measured matmul rate, and its
ratio to the baseline row (the first: first width and batch size, the
training's layout, float32, default mode), measured in the same process.
The peak is the vendor's dense rate on a GPU (:data:`machine.PEAK_TFLOPS`;
``null`` with a note for an unknown GPU) and the measured matmul rate on a
CPU. On CUDA the precision without autocast is TF32 (``cudnn.allow_tf32``,
PyTorch's default, on compute capability >= 8.0; ``--no-tf32`` turns TF32
off); both TF32 flags are recorded in every row.

FLOPs are counted analytically (:func:`mer_lib.models.nets.forward_macs`): conv
MACs = ``C_out * C_in * k * k * H_out * W_out``, linear MACs = ``in * out``;
x2 for FLOPs (multiply + add), x3 for a training step (forward + the two
backward products: input and weight gradients). BatchNorm, ReLU, pooling and
the optimiser are not counted, so the achieved rate is a slight
underestimate of the work done. The count is cross-checked once per width
against ``torch.utils.flop_counter.FlopCounterMode`` (on the meta device;
the ratio is recorded: slightly below 1 because the first convolution's
input gradient is never computed).

Timings are medians over repeats; on CUDA the device is synchronised before
every clock read, and each timing covers several steps without a host
synchronisation between them (``--inner``). The load average before and
after is recorded: other processes on the machine slow the 2-thread CPU runs
down a lot. On a CPU an achieved rate at or above the matmul rate is
possible: oneDNN may use fast-convolution algorithms (e.g. Winograd) that do
fewer multiplications than the direct count assumes.

The default output is ``benchmarks/results/train_throughput.json`` on a CPU
and ``benchmarks/results/train_throughput_<kind>.json`` on another device
kind (e.g. ``_cuda``), so the results of each kind stay. ``--tiny``
shrinks every size so that the script runs in seconds on a CPU (a check of
the script, not a measurement). ``benchmarks/gpu_check.sh`` runs this
benchmark on a GPU in its useful configurations.

Usage::

    python benchmarks/train_throughput.py [--device cpu|cuda|cuda:1] [--widths 1.0 0.125]
        [--quick-width W] [--batch-sizes 8 64] [--amp none|bf16] [--cudnn-benchmark] [--deterministic]
        [--no-tf32] [--repeats N] [--warmup N] [--inner N] [--tiny] [--out FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from machine import (  # benchmarks/machine.py (the script's folder is on sys.path)
    benchmark_device,
    default_out,
    machine_record,
    matmul_peak,
    median_seconds,
    peak_fields,
    peak_references,
    precision_used,
)
from torch.utils.flop_counter import FlopCounterMode

from mer_lib import artifacts
from mer_lib.config import get_profile
from mer_lib.models.nets import build_model, count_parameters, forward_macs
from mer_lib.models.train import deterministic_mode

INPUT = (1, 313, 149)
SYSTEM = "A2M2E"
#: Backend modes of the rows (``default``: PyTorch's settings, cuDNN autotuning off).
MODES = ("default", "cudnn_benchmark", "deterministic")
#: Training excerpts of one quick-profile epoch.
EPOCH_EXCERPTS = 288


@dataclass(frozen=True)
class Config:
    """One measured configuration (a row of the result).

    Attributes
    ----------
    width : float
        Model width multiplier.
    batch : int
        Examples per training step.
    channels_last : bool
        Memory layout of the model and the batch.
    amp : str
        ``"none"`` (float32) or ``"bf16"`` (``torch.autocast`` bfloat16).
    mode : str
        One of :data:`MODES`.
    """

    width: float
    batch: int
    channels_last: bool
    amp: str
    mode: str


def configurations(widths: list[float], batch_sizes: list[int], amps: list[str], modes: list[str],
                   training_layout: bool) -> list[Config]:
    """Every combination, the baseline (first of each option, the training's layout) first."""
    return [Config(w, b, cl, a, m) for w in widths for b in batch_sizes
            for cl in (training_layout, not training_layout) for a in amps for m in modes]


@contextlib.contextmanager
def backend_mode(mode: str, device: torch.device) -> Iterator[None]:
    """Set cuDNN autotuning / deterministic algorithms for ``mode`` inside the block; restored afterwards."""
    if mode == "deterministic":
        with deterministic_mode(device):
            yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = mode == "cudnn_benchmark"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def make_step(config: Config, device: torch.device):
    """A training step of a fresh model on one fixed random batch; returns ``(step, model)``."""
    torch.manual_seed(0)
    model = build_model(SYSTEM, config.width).train().to(device)
    x = torch.randn(config.batch, *INPUT).to(device)
    y = torch.rand(config.batch, 8).to(device)
    m = torch.rand(config.batch, 7).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if config.amp == "bf16"
                else contextlib.nullcontext())
    mse = torch.nn.functional.mse_loss

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = model(x)
            loss = 0.5 * mse(out.emotions.float(), y) + 0.5 * mse(out.bottleneck.float(), m)
        loss.backward()
        opt.step()

    return step, model


def train_step_timing(config: Config, device: torch.device, repeats: int, warmup: int, inner: int) -> dict:
    """Median seconds per training step of one configuration, examples/s and achieved TFLOP/s.

    Parameters
    ----------
    config : Config
        What to measure.
    device : torch.device
        Where.
    repeats, warmup, inner : int
        See :func:`machine.median_seconds` (``warmup`` counts steps).

    Returns
    -------
    dict
        The configuration, the precision and math flags in effect, timings and rates.
    """
    step, model = make_step(config, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with backend_mode(config.mode, device):
        flags = {"precision": precision_used(device, config.amp if config.amp != "none" else None),
                 "deterministic": torch.are_deterministic_algorithms_enabled(),
                 "cudnn_benchmark": torch.backends.cudnn.benchmark,
                 "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
        t = median_seconds(step, device, repeats=repeats, warmup=warmup, inner=inner)
    macs = forward_macs(SYSTEM, config.width, INPUT[1:])
    flops_example = 3 * 2 * macs
    eps = config.batch / t["median_seconds"]
    row = {**asdict(config), **flags, "parameters": count_parameters(model),
           "forward_gmacs_per_example": macs / 1e9, "train_gflop_per_example": flops_example / 1e9,
           "steps_timed": repeats * inner, "warmup_steps": warmup, "steps_per_timing": inner,
           "median_step_seconds": t["median_seconds"], "min_step_seconds": t["min_seconds"],
           "examples_per_second": eps, "achieved_tflops": eps * flops_example / 1e12,
           "train_seconds_per_288_excerpts": EPOCH_EXCERPTS / eps}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return row


def flop_check(width: float) -> dict:
    """``FlopCounterMode``'s FLOPs of one training step (forward + backward, meta device) vs the analytic count."""
    model = build_model(SYSTEM, width).train().to("meta")
    x = torch.randn(2, *INPUT, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        (out.emotions.sum() + out.bottleneck.sum()).backward()
    analytic = 2 * 3 * 2 * forward_macs(SYSTEM, width, INPUT[1:])
    return {"width": width, "batch": 2, "flop_counter": counter.get_total_flops(), "analytic": analytic,
            "ratio_counter_to_analytic": counter.get_total_flops() / analytic}


def add_ratios(row: dict, peaks: dict, base: dict | None) -> None:
    """Fractions of the peak and of the matmul rate, and the ratio to the baseline row, in place.

    Parameters
    ----------
    row : dict
        A row of :func:`train_step_timing` (left alone if it has an ``error``).
    peaks : dict
        :func:`machine.peak_references`.
    base : dict or None
        The baseline row (``None`` or with an ``error``: no ratio).
    """
    if "error" in row:
        return
    row.update(peak_fields(row["achieved_tflops"], peaks[row["precision"]]))
    ok = base is not None and "error" not in base
    row["examples_per_second_vs_baseline"] = row["examples_per_second"] / base["examples_per_second"] if ok else None


def row_line(r: dict) -> str:
    """One printed line per row."""
    head = (f"width {r['width']:g} batch {r['batch']} channels_last={r['channels_last']} amp={r['amp']} "
            f"mode={r['mode']}")
    if "error" in r:
        return f"{head}: FAILED {r['error']}"
    frac = "peak unknown" if r["fraction_of_peak"] is None else f"{r['fraction_of_peak']:.1%} of {r['precision']} peak"
    ratio = r["examples_per_second_vs_baseline"]
    return (f"{head}: {r['examples_per_second']:.1f} examples/s, {r['achieved_tflops']:.4g} TFLOP/s ({frac}, "
            f"{r['fraction_of_matmul']:.1%} of matmul), "
            + ("no baseline" if ratio is None else f"x{ratio:.2f} vs baseline"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring); fills the device-dependent defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--quick-width", type=float, default=get_profile("quick").train.width)
    parser.add_argument("--widths", type=float, nargs="+", help="default: 1.0 and --quick-width")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--amp", choices=("none", "bf16"), default="none",
                        help="bf16: also rows under torch.autocast(bfloat16)")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="also rows with cuDNN autotuning")
    parser.add_argument("--deterministic", action="store_true", help="also rows in deterministic mode")
    parser.add_argument("--no-tf32", action="store_true", help="CUDA: TF32 off for matmuls and convolutions")
    parser.add_argument("--repeats", type=int, help="timings per row (CPU: 6 at width >= 0.5, else 30; CUDA: 10)")
    parser.add_argument("--warmup", type=int, help="untimed steps per row (CPU: 1 or 3; CUDA: 5)")
    parser.add_argument("--inner", type=int, help="steps per timing (CPU: 1; CUDA: 10)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke sizes (checks the script): smoke width, batch sizes / 16 (at least 2), "
                             "2 timings of 1 step, small matmuls")
    parser.add_argument("--out", help="default: benchmarks/results/train_throughput[_<device kind>].json")
    args = parser.parse_args(argv)
    try:
        args.device = benchmark_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    args.widths = args.widths or [1.0, args.quick_width]
    if args.tiny:
        args.widths = [get_profile("smoke").train.width]
        args.batch_sizes = sorted({max(2, b // 16) for b in args.batch_sizes})
        args.repeats = 2 if args.repeats is None else args.repeats
        args.warmup = 1 if args.warmup is None else args.warmup
        args.inner = 1 if args.inner is None else args.inner
    if args.inner is None:
        args.inner = 10 if args.device.type == "cuda" else 1
    args.out = args.out or default_out("train_throughput", args.device)
    return args


def timing_of(args: argparse.Namespace, width: float) -> tuple[int, int]:
    """``(repeats, warmup)`` of a row at ``width`` (options or the device's defaults)."""
    if args.device.type == "cuda":
        repeats, warmup = 10, 5
    else:
        repeats, warmup = (6, 1) if width >= 0.5 else (30, 3)
    return (repeats if args.repeats is None else args.repeats), (warmup if args.warmup is None else args.warmup)


def run_rows(args: argparse.Namespace, configs: list[Config], peaks: dict, result: dict) -> list[dict]:
    """Measure and print every configuration into ``result["runs"]``, writing ``result`` after each row.

    A failing configuration (e.g. out of memory) becomes a row with ``error``;
    the file written after each row keeps what was measured if the run is
    stopped (``result["complete"]`` is still false then).
    """
    rows = result["runs"]
    for c in configs:
        repeats, warmup = timing_of(args, c.width)
        try:
            row = train_step_timing(c, args.device, repeats, warmup, args.inner)
        except RuntimeError as exc:  # torch.OutOfMemoryError, unsupported bf16 kernels, ...
            row = {**asdict(c), "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
            if args.device.type == "cuda":
                torch.cuda.empty_cache()
        add_ratios(row, peaks, rows[0] if rows else row)
        rows.append(row)
        print(row_line(row), flush=True)
        artifacts.write_json(args.out, result)
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write the JSON, print a summary."""
    args = parse_args(argv)
    if args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if args.deterministic and args.device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call
    load_before = os.getloadavg()
    device = args.device
    amps = ["none"] + (["bf16"] if args.amp == "bf16" else [])
    modes = [m for m, on in zip(MODES, (True, args.cudnn_benchmark, args.deterministic)) if on]
    configs = configurations(args.widths, args.batch_sizes, amps, modes, get_profile("quick").train.channels_last)
    precisions = sorted({precision_used(device, a if a != "none" else None) for a in amps})
    sizes = (256, 512) if args.tiny else None
    result = {
        "what": f"training steps of {SYSTEM} (forward, MSE, backward, Adam) on random batches "
                f"(B, {', '.join(map(str, INPUT))}) on {device}; FLOPs analytic: conv/linear MACs x2 x3 (fwd+bwd); "
                "fraction_of_peak: of the datasheet dense rate on a GPU, of the measured matmul rate on a CPU",
        "complete": False, "machine": machine_record(load_before, device),
        "options": {"widths": args.widths, "batch_sizes": args.batch_sizes, "amp": args.amp, "modes": modes,
                    "no_tf32": args.no_tf32, "tiny": args.tiny, "steps_per_timing": args.inner},
        "flop_counter_check": [flop_check(w) for w in args.widths],
        "peaks": peak_references(device, precisions, sizes), "baseline": asdict(configs[0]), "runs": [],
    }
    run_rows(args, configs, result["peaks"], result)
    result["matmul_after"] = {p: matmul_peak(device, p, sizes) for p in precisions}
    result["machine"] = machine_record(load_before, device)  # the load average after
    result["complete"] = True
    artifacts.write_json(args.out, result)
    summary = ", ".join(f"{p} {v['matmul']['tflops']:.4g} (after {result['matmul_after'][p]['tflops']:.4g})"
                        for p, v in result["peaks"].items())
    print(f"matmul TFLOP/s: {summary}; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
