"""Run the numbered notebooks in order with papermill (``make reproduce``).

Every notebook ``notebooks/NN_name.ipynb`` takes the papermill parameters
``profile``, ``run_dir`` and ``data_dir`` (cell tagged ``parameters``). The
runner executes them in number order, writes each executed copy to
``run_dir/notebooks/``, records per-notebook wall time and peak memory (the
largest summed resident set size of the notebook's kernel and its child
processes, sampled every 0.1 s) in ``run_dir/pipeline_times.json``, and stops at the first failure, naming the
executed notebook that holds the traceback.

Command line::

    python -m mer_lib.runner --profile quick --run-dir runs/quick [--data-dir DIR] [--notebooks 01 03]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

from mer_lib import artifacts
from mer_lib.config import DEFAULT_PROFILE, PROFILES, RunLayout
from mer_lib.errors import MerError
from mer_lib.progress import PROGRESS_ENV

#: Root of the repository (the package is installed in editable mode).
REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_DIR = REPO_ROOT / "figures"
#: The authors' 50 published attack logs, shipped with the repository (MIT; see its README).
PUBLISHED_RUNS_DIR = REPO_ROOT / "reference" / "published_runs"
#: Environment variable that overrides the default run directory (used by the nbval regression).
RUN_DIR_ENV = "MER_RUN_DIR"
#: Environment variable that overrides the default figures folder (the nbval regression keeps the
#: committed figures untouched by pointing it into its temporary run directory).
FIGURES_DIR_ENV = "MER_FIGURES_DIR"


def resolve_run_dir(profile: str, run_dir: str | os.PathLike | None = None) -> Path:
    """The run directory a notebook reads and writes.

    ``run_dir`` if given; else ``$MER_RUN_DIR`` if set; else
    ``<repo>/runs/<profile>``. Relative paths are taken from the repository
    root, so a notebook opened in JupyterLab and one run by papermill agree.
    """
    chosen = run_dir or os.environ.get(RUN_DIR_ENV) or Path("runs") / profile
    path = Path(chosen).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_figures_dir(figures_dir: str | os.PathLike | None = None) -> Path:
    """Where notebooks save the paper's figures: ``figures_dir``, else ``$MER_FIGURES_DIR``, else ``figures/``.

    Relative paths are taken from the repository root.
    """
    chosen = figures_dir or os.environ.get(FIGURES_DIR_ENV) or FIGURES_DIR
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def list_notebooks(notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
                   select: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in number order, optionally filtered by number or name."""
    found = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if select:
        chosen = [p for p in found if any(p.name.startswith(s) or p.stem == s for s in select)]
        if not chosen:
            raise MerError(f"no notebook in {notebooks_dir} matches {select}; found {[p.name for p in found]}")
        return chosen
    return found


class PeakMemory:
    """Context manager sampling the summed RSS of this process's descendants in a thread.

    Papermill runs every notebook in a kernel subprocess, so the descendants'
    memory is the notebook's memory. ``peak_mb`` is the largest sum seen.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        total = 0
        for child in psutil.Process().children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_mb = max(self.peak_mb, total / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def run_notebooks(profile: str = DEFAULT_PROFILE, run_dir: str | os.PathLike | None = None,
                  data_dir: str | os.PathLike | None = None, select: list[str] | None = None,
                  notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR) -> Path:
    """Execute the notebooks in order; return the run directory.

    The kernels inherit ``$MER_PROGRESS=line`` (unless set otherwise), so every
    progress bar leaves one line in the executed notebooks
    (:mod:`mer_lib.progress`).

    Raises
    ------
    MerError
        If a notebook fails; the message names the executed notebook.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise MerError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    run = resolve_run_dir(profile, run_dir)
    out_dir = RunLayout(run).notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "run_dir": str(run), "data_dir": str(data_dir) if data_dir else None}
    notebooks = list_notebooks(notebooks_dir, select)
    os.environ.setdefault(PROGRESS_ENV, "line")
    times_path = RunLayout(run).times
    times = artifacts.read_json(times_path) if times_path.exists() else {}
    for i, nb in enumerate(notebooks, 1):
        executed = out_dir / nb.name
        print(f"[{i}/{len(notebooks)}] {nb.name} (profile={profile}) -> {executed}", flush=True)
        start = time.perf_counter()
        try:
            with PeakMemory() as memory:
                pm.execute_notebook(str(nb), str(executed), parameters=params, cwd=str(nb.parent),
                                    progress_bar=True, kernel_name="python3")
        except pm.PapermillExecutionError as exc:
            raise MerError(f"notebook {nb.name} failed ({exc.ename}: {exc.evalue}); "
                           f"the traceback is in the executed notebook {executed}") from None
        seconds = time.perf_counter() - start
        times[nb.stem] = {"seconds": round(seconds, 2), "peak_rss_mb": round(memory.peak_mb, 1), "profile": profile}
        artifacts.write_json(times_path, times)
        print(f"    done in {seconds:.1f} s, peak memory {memory.peak_mb:.0f} MB", flush=True)
    return run


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    parser.add_argument("--run-dir", default=None, help="default: runs/<profile>")
    parser.add_argument("--data-dir", default=None, help="real (or other) dataset in the Soundtracks layout")
    parser.add_argument("--notebooks", nargs="*", default=None, help="numbers or names to run (default: all)")
    args = parser.parse_args(argv)
    try:
        run = run_notebooks(args.profile, args.run_dir, args.data_dir, args.notebooks)
    except MerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"All notebooks done. Executed notebooks and artifacts: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
