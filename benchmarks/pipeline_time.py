"""Wall time and peak memory of the whole notebook sequence (``make reproduce``).

Runs every numbered notebook with papermill (:func:`mer_lib.runner.run_notebooks`)
twice in one process, in a fresh temporary run directory:

1. **cold**: nothing computed yet (synthetic audio, spectrogram cache, every
   model, every attack are produced), which is what a fresh ``make reproduce``
   does after installation;
2. **warm**: the same run directory again, so every stage finds its
   artifacts by their configuration hash and reuses them. The warm/cold ratio
   measures how much of a rerun is skipped.

Per notebook it records wall time and peak memory (the largest summed
resident set size of the notebook's kernel and its children, sampled every
0.1 s; see :class:`mer_lib.runner.PeakMemory`), plus the totals and the
profile's budget (the ``quick`` profile must run in at most 600 s on a 2-core
machine). A whole pipeline run takes minutes, so each phase runs once (no
median over repeats); the load average before and after is recorded because
other processes on the machine slow the 2-core run down.

Usage::

    python benchmarks/pipeline_time.py [--profile quick] [--keep DIR]
        [--out benchmarks/results/pipeline_time_<profile>.json]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from machine import machine_record  # benchmarks/machine.py (the script's folder is on sys.path)

from mer_lib import artifacts
from mer_lib.config import DEFAULT_PROFILE, PROFILES
from mer_lib.runner import list_notebooks, run_notebooks

#: Wall-time budget of a full cold run of the default profile on a 2-core CPU (seconds).
BUDGET_SECONDS = {"quick": 600.0}


def timed_run(profile: str, run_dir: Path) -> dict:
    """Run every notebook once into ``run_dir``; per-notebook and total time and peak memory."""
    start = time.perf_counter()
    run_notebooks(profile, run_dir)
    total = time.perf_counter() - start
    record = artifacts.read_json(run_dir / "pipeline_times.json")
    notebooks = {p.stem: record[p.stem] for p in list_notebooks()}
    return {"notebooks": notebooks,
            "notebook_seconds": round(sum(v["seconds"] for v in notebooks.values()), 2),
            "total_seconds": round(total, 2),
            "peak_rss_mb": max(v["peak_rss_mb"] for v in notebooks.values())}


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    parser.add_argument("--keep", default=None, help="run directory to use and keep (default: a temporary one)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/pipeline_time_<profile>.json")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"pipeline_time_{args.profile}.json"
    run_dir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix=f"mer_pipeline_{args.profile}_"))
    if run_dir.exists() and any(run_dir.iterdir()):
        raise SystemExit(f"{run_dir} is not empty: the cold run needs a fresh run directory")
    load_before = os.getloadavg()
    try:
        cold = timed_run(args.profile, run_dir)
        warm = timed_run(args.profile, run_dir)
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    budget = BUDGET_SECONDS.get(args.profile)
    result = {
        "benchmark": "pipeline_time",
        "what": "every numbered notebook executed by papermill, cold (fresh run directory) then warm (rerun)",
        "profile": args.profile,
        "repeats": 1,
        "cold": cold,
        "warm": warm,
        "warm_over_cold": round(warm["total_seconds"] / cold["total_seconds"], 3),
        "budget_seconds": budget,
        "cold_within_budget": None if budget is None else cold["total_seconds"] <= budget,
        "machine": machine_record(load_before),
    }
    artifacts.write_json(out, result)
    print(f"cold {cold['total_seconds']:.0f} s (budget {budget}), warm {warm['total_seconds']:.0f} s, "
          f"peak memory {cold['peak_rss_mb']:.0f} MB -> {out}")
    return result


if __name__ == "__main__":
    main()
