"""What machine a benchmark ran on (shared by the scripts in ``benchmarks/``)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (or the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(load_before: tuple[float, float, float]) -> dict:
    """CPU, cores, Python and torch versions, torch threads, and the load average before and now.

    Parameters
    ----------
    load_before : tuple of float
        ``os.getloadavg()`` taken when the benchmark started: other processes
        on a 2-core machine slow a run down, so the load is part of the result.
    """
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "load_average_before": list(load_before), "load_average_after": list(os.getloadavg())}
