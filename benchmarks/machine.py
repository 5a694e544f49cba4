"""What machine a benchmark ran on, and how fast it could go (shared by the scripts in ``benchmarks/``).

* :func:`machine_record`: CPU, cores, Python and torch versions, threads,
  load average and, with ``device``, :func:`device_record` (for CUDA: name,
  compute capability, memory, CUDA and cuDNN versions, TF32 and cuDNN flags);
* :func:`datasheet_peak`: the vendor's peak dense rate of a GPU (by the name
  ``torch.cuda.get_device_name`` gives) for one precision, from
  :data:`PEAK_TFLOPS`; ``None`` for an unknown device (and for MIG slices,
  which get a fraction of the chip);
* :func:`matmul_peak`: the measured matrix-multiply rate of a device in one
  precision, the practical peak (the reference "peak" on a CPU);
* :func:`peak_references`, :func:`peak_fields`: the reference peak per
  precision (datasheet on a GPU, measured matmul on a CPU) and an achieved
  rate as fractions of it;
* :func:`median_seconds`: medians over repeats of a function, synchronising
  the device before every clock read;
* :func:`benchmark_device`, :func:`default_out`, :func:`precision_used`:
  the ``--device`` option of the scripts, their default output file (one per
  device kind, e.g. ``results/train_throughput_cuda.json``; CPU results keep
  the plain name), and which precision a run on a device uses.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

#: Folder of the committed results.
RESULTS = Path(__file__).resolve().parent / "results"

#: Vendors' peak dense rates (TFLOP/s, no structured sparsity), matched in order
#: against ``torch.cuda.get_device_name``: ``(regex, device, {precision: TFLOP/s}, source)``.
#: ``tf32``/``bf16`` are tensor-core rates; the datasheets print them "with
#: sparsity" (marked *): the dense rate is half of that figure. bf16 is with
#: float32 accumulation (what PyTorch uses). A precision missing from a row has
#: no tensor-core support on that device.
PEAK_TFLOPS: tuple[tuple[str, str, dict[str, float], str], ...] = (
    # NVIDIA H200 Tensor Core GPU datasheet: H200 NVL: FP32 60, TF32 835*, BF16 1,671*
    (r"H200 NVL", "H200 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}, "NVIDIA H200 datasheet (NVL)"),
    # NVIDIA H200 Tensor Core GPU datasheet: H200 SXM: FP32 67, TF32 989*, BF16 1,979*
    (r"H200", "H200 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}, "NVIDIA H200 datasheet (SXM)"),
    # NVIDIA H100 Tensor Core GPU datasheet: H100 NVL: FP32 60, TF32 835*, BF16 1,671*
    (r"H100 NVL", "H100 NVL", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}, "NVIDIA H100 datasheet (NVL)"),
    # NVIDIA H100 Tensor Core GPU datasheet (2022): H100 PCIe: FP32 51, TF32 756*, BF16 1,513*
    (r"H100 PCIe", "H100 PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.5}, "NVIDIA H100 datasheet (PCIe)"),
    # NVIDIA H100 Tensor Core GPU datasheet: H100 SXM ("NVIDIA H100 80GB HBM3"): FP32 67, TF32 989*, BF16 1,979*
    (r"H100", "H100 SXM", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5}, "NVIDIA H100 datasheet (SXM)"),
    # NVIDIA A100 Tensor Core GPU datasheet (40 and 80 GB, SXM and PCIe): FP32 19.5, TF32 156, BF16 312
    (r"A100", "A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}, "NVIDIA A100 datasheet"),
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183 | 366*, BF16 362.05 | 733*
    (r"L40S", "L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05}, "NVIDIA L40S datasheet"),
    # NVIDIA L4 Tensor Core GPU datasheet: FP32 30.3, TF32 120*, BF16 242*
    (r"\bL4\b", "L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}, "NVIDIA L4 datasheet"),
    # NVIDIA Ada GPU Architecture whitepaper, appendix (GeForce RTX 4090): FP32 82.6,
    # TF32 tensor 82.6 (165.2*), BF16 tensor with FP32 accumulate 165.2 (330.4*)
    (r"RTX 4090(?! D)", "GeForce RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2},
     "NVIDIA Ada GPU Architecture whitepaper"),
    # NVIDIA Tesla V100 datasheet: FP32 15.7 (SXM2), 14 (PCIe), 16.4 (V100S PCIe); no TF32, no BF16
    (r"V100S", "V100S PCIe", {"fp32": 16.4}, "NVIDIA V100 datasheet (V100S)"),
    (r"V100-SXM2", "V100 SXM2", {"fp32": 15.7}, "NVIDIA V100 datasheet (SXM2)"),
    (r"V100-PCIE", "V100 PCIe", {"fp32": 14.0}, "NVIDIA V100 datasheet (PCIe)"),
)


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def benchmark_device(name: str) -> torch.device:
    """The ``--device`` option as a :class:`torch.device`, checked to exist here.

    Parameters
    ----------
    name : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Returns
    -------
    torch.device
        With an explicit index for CUDA (the current device for ``"cuda"``).

    Raises
    ------
    ValueError
        Unknown device string, CUDA unavailable, index out of range, or a kind
        other than CPU and CUDA.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {name!r}: {exc}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device kind {device.type!r} is not supported (cpu or cuda)")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def default_out(benchmark: str, device: torch.device) -> str:
    """``results/<benchmark>.json`` on a CPU, ``results/<benchmark>_<kind>.json`` on another device kind."""
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    return str(RESULTS / f"{benchmark}{suffix}.json")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int,
                   inner: int = 1) -> dict:
    """Seconds per call of ``fn``: median and minimum over ``repeats`` timings of ``inner`` calls.

    The device is synchronised before every clock read, so queued GPU work
    is inside the timing it belongs to; ``inner > 1`` leaves the calls of a
    timing without a host synchronisation between them, as a training loop does.

    Parameters
    ----------
    fn : callable
        The work, called without arguments.
    device : torch.device
        Where ``fn`` runs.
    repeats, warmup, inner : int
        Timings, untimed calls before them, calls per timing.

    Returns
    -------
    dict
        ``median_seconds``, ``min_seconds`` (per call), ``repeats``, ``warmup``, ``inner``.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - t) / inner)
    return {"median_seconds": statistics.median(times), "min_seconds": min(times), "repeats": repeats,
            "warmup": warmup, "inner": inner}


def precision_used(device: torch.device, amp: str | None = None) -> str:
    """The arithmetic of the convolutions run on ``device``: ``"fp32"``, ``"tf32"`` or ``"bf16"``.

    ``"bf16"`` under bf16 autocast; ``"tf32"`` on a CUDA device of compute
    capability 8.0 or newer while ``torch.backends.cudnn.allow_tf32`` is set
    (PyTorch's default: convolutions, which do nearly all of these models'
    FLOPs; matrix products follow ``torch.backends.cuda.matmul.allow_tf32``,
    off by default); otherwise ``"fp32"``.
    """
    if amp == "bf16":
        return "bf16"
    if (device.type == "cuda" and torch.backends.cudnn.allow_tf32
            and torch.cuda.get_device_capability(device) >= (8, 0)):
        return "tf32"
    return "fp32"


def datasheet_peak(device_name: str, precision: str) -> dict:
    """The vendor's peak dense rate of a named GPU in one precision (:data:`PEAK_TFLOPS`).

    Parameters
    ----------
    device_name : str
        As ``torch.cuda.get_device_name`` gives it.
    precision : str
        ``"fp32"``, ``"tf32"`` or ``"bf16"``.

    Returns
    -------
    dict
        ``tflops`` (``None`` when unknown), ``matched`` (the table's device or
        ``None``), ``source`` and ``note``.
    """
    if "MIG" in device_name:
        return {"tflops": None, "matched": None, "source": None,
                "note": f"{device_name!r} is a MIG slice: its peak is a fraction of the chip's, not tabulated"}
    for pattern, label, rates, source in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            rate = rates.get(precision)
            note = (f"{label}: {precision} peak {rate:g} TFLOP/s (dense)" if rate is not None else
                    f"{label} has no {precision} tensor cores: no tabulated {precision} peak")
            return {"tflops": rate, "matched": label, "source": source, "note": note}
    return {"tflops": None, "matched": None, "source": None,
            "note": f"{device_name!r} is not in benchmarks/machine.py PEAK_TFLOPS: peak unknown"}


def matmul_rate(device: torch.device, precision: str, n: int, repeats: int = 5) -> dict:
    """Median TFLOP/s of an ``n x n`` matrix product (``2 n^3`` FLOPs) in one precision.

    ``"bf16"`` multiplies bfloat16 matrices; on CUDA ``"tf32"`` and ``"fp32"``
    multiply float32 matrices with ``torch.backends.cuda.matmul.allow_tf32``
    set accordingly for the measurement (restored afterwards).
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        inner = 1 if device.type == "cpu" else 10
        t = median_seconds(lambda: torch.mm(a, b), device, repeats=repeats, warmup=2, inner=inner)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    flops = 2 * n ** 3
    return {"n": n, "precision": precision, **t, "tflops": flops / t["median_seconds"] / 1e12,
            "best_tflops": flops / t["min_seconds"] / 1e12}


def matmul_peak(device: torch.device, precision: str = "fp32", sizes: tuple[int, ...] | None = None) -> dict:
    """The best of :func:`matmul_rate` over several sizes: the device's practical peak in ``precision``.

    Parameters
    ----------
    device : torch.device
        Where to multiply.
    precision : str
        ``"fp32"``, ``"tf32"`` or ``"bf16"``.
    sizes : tuple of int, optional
        Matrix sizes; default 1024, 2048, 4096 on a CPU and 4096, 8192 on a GPU.

    Returns
    -------
    dict
        ``tflops`` and ``n`` of the best size, ``precision``, ``per_size``.
    """
    if sizes is None:
        sizes = (1024, 2048, 4096) if device.type == "cpu" else (4096, 8192)
    per_size = [matmul_rate(device, precision, n) for n in sizes]
    best = max(per_size, key=lambda r: r["tflops"])
    return {"tflops": best["tflops"], "n": best["n"], "precision": precision, "per_size": per_size}


def peak_references(device: torch.device, precisions: list[str], sizes: tuple[int, ...] | None = None) -> dict:
    """Per precision: the datasheet peak (GPU), the measured matmul peak, and the one rates are compared with.

    Parameters
    ----------
    device : torch.device
        The benchmarked device.
    precisions : list of str
        The precisions the benchmark's runs use (:func:`precision_used`).
    sizes : tuple of int, optional
        Matrix sizes of :func:`matmul_peak`.

    Returns
    -------
    dict
        ``{precision: {"reference_tflops", "reference", "matmul", ...}}``. On
        a GPU the reference is the datasheet (``None`` when unknown; plus
        ``datasheet`` and ``matmul_fraction_of_datasheet``); on a CPU the
        measured matmul rate (there is no meaningful datasheet figure for a
        shared, thread-limited CPU).
    """
    peaks = {}
    for p in precisions:
        mm = matmul_peak(device, p, sizes)
        if device.type == "cuda":
            sheet = datasheet_peak(torch.cuda.get_device_name(device), p)
            peaks[p] = {"reference_tflops": sheet["tflops"], "reference": "datasheet", "datasheet": sheet,
                        "matmul": mm, "matmul_fraction_of_datasheet":
                            None if sheet["tflops"] is None else mm["tflops"] / sheet["tflops"]}
        else:
            peaks[p] = {"reference_tflops": mm["tflops"], "reference": "measured matmul", "matmul": mm}
    return peaks


def peak_fields(tflops: float, peak: dict) -> dict:
    """An achieved rate against one precision's entry of :func:`peak_references`.

    Returns
    -------
    dict
        ``peak_tflops``, ``peak_reference``, ``fraction_of_peak`` (``None``
        when the peak is unknown) and ``fraction_of_matmul``.
    """
    ref = peak["reference_tflops"]
    return {"peak_tflops": ref, "peak_reference": peak["reference"],
            "fraction_of_peak": None if ref is None else tflops / ref,
            "fraction_of_matmul": tflops / peak["matmul"]["tflops"]}


def device_record(device: torch.device) -> dict:
    """What ``device`` is: for CUDA name, capability, memory, versions and math flags.

    Parameters
    ----------
    device : torch.device
        A CPU or CUDA device.

    Returns
    -------
    dict
        ``device`` and ``kind``; on CUDA also ``name``, ``capability``,
        ``memory_gib``, ``multiprocessors``, ``cuda``, ``cudnn``,
        ``matmul_allow_tf32``, ``cudnn_allow_tf32``, ``float32_matmul_precision``,
        ``cudnn_benchmark``, ``cudnn_deterministic`` (the flags as the run starts).
    """
    record = {"device": str(device), "kind": device.type}
    if device.type != "cuda":
        return record
    props = torch.cuda.get_device_properties(device)
    record.update({
        "name": torch.cuda.get_device_name(device), "capability": list(torch.cuda.get_device_capability(device)),
        "memory_gib": props.total_memory / 2 ** 30, "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_deterministic": torch.backends.cudnn.deterministic,
    })
    return record


def machine_record(load_before: tuple[float, float, float], device: torch.device | None = None) -> dict:
    """CPU, cores, Python and torch versions, torch threads, the load average before and now, the device.

    Parameters
    ----------
    load_before : tuple of float
        ``os.getloadavg()`` taken when the benchmark started: other processes
        on a 2-core machine slow a run down, so the load is part of the result.
    device : torch.device, optional
        The benchmarked device: adds ``"device"`` (:func:`device_record`).
    """
    record = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
              "load_average_before": list(load_before), "load_average_after": list(os.getloadavg())}
    if device is not None:
        record["device"] = device_record(device)
    return record
