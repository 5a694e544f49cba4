"""Run the numbered notebooks in order with papermill (``make reproduce``; protocol §9).

Every ``notebooks/NN_name.ipynb`` takes the papermill parameters ``profile``, ``run_dir`` and ``data_dir``.
Each executed copy goes to ``run_dir/notebooks/``, wall time and peak memory to ``run_dir/pipeline_times.json``; the
run stops at the first failure, naming the ``<name>.failed.ipynb`` that holds the traceback. Command line::

    python -m mer_lib.runner --profile quick --run-dir runs/quick [--data-dir DIR] [--notebooks 01 03]
        [--executor local:8]

Relative ``--run-dir`` and ``--data-dir`` are taken from the current folder and passed on as absolute paths.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

from mer_lib import artifacts
from mer_lib.config import DEFAULT_PROFILE, PROFILES, RunLayout
from mer_lib.errors import MerError
from mer_lib.jobs import EXECUTOR_ENV, parse_executor
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


def launch_dir() -> Path:
    """The folder the user's command was run from: ``$PWD`` if it is an existing folder, else the repository root.

    The shell sets ``$PWD``, and neither papermill's ``--cwd`` nor Jupyter's per-notebook working folder changes it.
    """
    pwd = os.environ.get("PWD", "")
    if pwd and Path(pwd).is_absolute() and Path(pwd).is_dir():
        return Path(pwd)
    return REPO_ROOT


def _kind(value: object) -> str:
    """``"the int 3"``: a value and its type, for messages."""
    return f"the {type(value).__name__} {value!r}"


def path_parameter(name: str, value: object, base: str | os.PathLike) -> Path | None:
    """A path parameter checked and made absolute (from ``base``; ``~`` expanded, ``..`` normalised); None stays None.

    :class:`MerError` unless ``value`` is None or a non-empty string or path (papermill reads ``-p run_dir 3`` as 3).
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else os.fspath(value) if isinstance(value, os.PathLike) else None
    if not isinstance(text, str):
        raise MerError(f"parameter {name}: expected a path (a string) or None, got {_kind(value)}; "
                       f"with papermill, -p {name} None gives the default and a folder named like a number "
                       f"needs -r {name} <name>")
    if not text.strip():
        raise MerError(f"parameter {name}: expected a path or None, got an empty string")
    return Path(os.path.abspath(Path(base) / Path(text).expanduser()))


def resolve_data_dir(data_dir: str | os.PathLike | None, base: str | os.PathLike) -> Path | None:
    """``data_dir`` as an absolute path (relative: from ``base``); :class:`MerError` naming it unless it is a folder."""
    path = path_parameter("data_dir", data_dir, base)
    if path is not None and not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise MerError(f"data_dir {os.fspath(data_dir)!r}: {path} {what} (a relative data_dir is taken "
                       f"from the folder the command was run from, {base}); expected the dataset folder "
                       "with Set1/, mean_ratings_set1.csv and metadata_annotations/")
    return path


def require_writable(folder: str | os.PathLike, what: str = "run directory") -> Path:
    """Create ``folder`` if needed and check that a file can be written in it; :class:`MerError` naming it if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        state = "is not writable" if folder.is_dir() else "cannot be created"
        raise MerError(f"the {what} {folder} {state} ({reason}); choose another run_dir "
                       "or give yourself write permission there") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def resolve_run_dir(profile: str, run_dir: str | os.PathLike | None = None,
                    base: str | os.PathLike | None = None) -> Path:
    """The run directory: ``run_dir``, else ``$MER_RUN_DIR``, else ``<repo>/runs/<profile>``, created if needed.

    Relative paths are taken from ``base`` (default :func:`launch_dir`). :class:`MerError` for a ``run_dir`` that is
    not a path or a folder that cannot be written.
    """
    base = launch_dir() if base is None else Path(base)
    name, value = "run_dir", run_dir
    if value is None and os.environ.get(RUN_DIR_ENV):
        name, value = f"${RUN_DIR_ENV}", os.environ[RUN_DIR_ENV]
    path = path_parameter(name, value, base)
    return require_writable(REPO_ROOT / "runs" / profile if path is None else path)


def resolve_figures_dir(figures_dir: str | os.PathLike | None = None, base: str | os.PathLike | None = None) -> Path:
    """Where notebooks save figures: ``figures_dir``, else ``$MER_FIGURES_DIR``, else ``figures/``.

    Relative paths are taken from ``base``, by default :func:`launch_dir`.
    """
    base = launch_dir() if base is None else Path(base)
    name, value = "figures_dir", figures_dir
    if value is None and os.environ.get(FIGURES_DIR_ENV):
        name, value = f"${FIGURES_DIR_ENV}", os.environ[FIGURES_DIR_ENV]
    path = path_parameter(name, value, base)
    return FIGURES_DIR if path is None else path


def _selects(selector: str, notebook: Path) -> bool:
    """Whether ``selector`` (a number, a name or the start of one) picks ``notebook``."""
    text = selector.strip()
    if text.isdigit():
        return int(text) == int(notebook.name[:2])
    name = text.removesuffix(".ipynb")
    return bool(name) and (notebook.stem.startswith(name) or notebook.stem[3:] == name)


def list_notebooks(notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
                   select: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in number order, optionally a selection of them.

    Parameters
    ----------
    notebooks_dir : path-like
        Folder of the notebooks.
    select : list of str, optional
        None: all. Else each entry picks notebooks by number (``"1"``, ``"01"``), name with or without number
        (``"attacks"``, ``"05_attacks.ipynb"``) or the start of a name (``"05_att"``).

    Raises
    ------
    MerError
        For an empty selection or an entry that picks no notebook, listing the notebooks there are.
    """
    found = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if select is None:
        return found
    available = ", ".join(p.stem for p in found) or "none"
    if not select:
        raise MerError(f"no notebooks selected (--notebooks was given without a value); "
                       f"give numbers or names of the notebooks in {notebooks_dir}: {available}")
    unmatched = [str(s) for s in select if not any(_selects(str(s), p) for p in found)]
    if unmatched:
        raise MerError(f"no notebook in {notebooks_dir} matches {', '.join(map(repr, unmatched))}; "
                       f"expected numbers or names of: {available}")
    return [p for p in found if any(_selects(str(s), p) for s in select)]


class PeakMemory:
    """Context manager sampling in a thread the summed RSS of this process's descendants (the notebook's kernel).

    ``peak_mb`` is the largest sum seen.
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


def _failure_message(notebook: Path, executed: Path, failed: Path | None, exc: Exception) -> str:
    """What the user reads when a notebook fails: the error, where its traceback is, what was kept."""
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    where = (f"the traceback is in the executed notebook {failed}" if failed is not None
             else "no executed copy was saved")
    kept = f"; the last successful executed notebook {executed} is kept" if executed.exists() else ""
    return f"notebook {notebook.name} failed ({ename}: {evalue}); {where}{kept}"


def execute_notebook(notebook: Path, executed: Path, parameters: Mapping[str, object]) -> None:
    """Run ``notebook`` with papermill (in its folder) into ``executed``, replacing the previous copy only on success.

    A failed run is saved as ``<name>.failed.ipynb`` (removed by the next success) and raises :class:`MerError`
    naming it and the copy that is kept: a cell raised, the kernel died or a cell timed out.
    """
    # imported here: the kernels import this module (through mer_lib.notebook) and need none of them
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    failed = executed.with_name(f"{executed.stem}.failed{executed.suffix}")
    with artifacts.atomic_path(executed) as tmp:
        try:
            with warnings.catch_warnings():  # the temporary file's name does not end in .ipynb
                warnings.filterwarnings("ignore", message="The specified file .* does not end in")
                nb = pm.execute_notebook(str(notebook), str(tmp), parameters=dict(parameters),
                                         cwd=str(notebook.parent), progress_bar=True, kernel_name="python3")
        except (pm.PapermillExecutionError, DeadKernelError, CellTimeoutError) as exc:
            saved = tmp.is_file() and tmp.stat().st_size > 0
            if saved:
                os.replace(tmp, failed)
            raise MerError(_failure_message(notebook, executed, failed if saved else None, exc)) from None
        nb.metadata.setdefault("papermill", {})["output_path"] = str(executed)
        nbformat.write(nb, tmp)
    failed.unlink(missing_ok=True)


def _read_times(path: Path) -> dict:
    """The per-notebook times recorded so far; a damaged file is started afresh with a warning."""
    if not path.exists():
        return {}
    try:
        times = artifacts.read_json(path)
    except MerError as exc:
        warnings.warn(f"{exc}; starting it afresh", stacklevel=2)
        return {}
    return times if isinstance(times, dict) else {}


def run_notebooks(profile: str = DEFAULT_PROFILE, run_dir: str | os.PathLike | None = None,
                  data_dir: str | os.PathLike | None = None, select: list[str] | None = None,
                  notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR, allow_subset: bool = False,
                  executor: str | None = None) -> Path:
    """Execute the notebooks in order (:func:`execute_notebook`); return the run directory.

    Every argument is checked before the first notebook starts (:class:`MerError`); a failing notebook also raises
    it. Stale temporary files are removed first (:func:`mer_lib.artifacts.remove_stale_temps`). The kernels inherit
    ``$MER_PROGRESS=line`` unless set otherwise and ``executor`` as ``$MER_EXECUTOR``, which every notebook reads.
    """
    if not isinstance(profile, str) or profile not in PROFILES:
        raise MerError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    notebooks = list_notebooks(notebooks_dir, select)
    if executor is not None:
        parse_executor(executor)  # a malformed executor fails here, before anything runs
    here = Path.cwd()
    data = resolve_data_dir(data_dir, here)
    run = resolve_run_dir(profile, run_dir, base=here)
    layout = RunLayout(run)
    require_writable(layout.notebooks, "folder of the executed notebooks")
    artifacts.remove_stale_temps(run)
    params = {"profile": profile, "run_dir": str(run), "data_dir": None if data is None else str(data)}
    if allow_subset:  # only then: notebook 08 has no such parameter
        params["allow_subset"] = True
    os.environ.setdefault(PROGRESS_ENV, "line")
    if executor is not None:
        os.environ[EXECUTOR_ENV] = executor
    times = _read_times(layout.times)
    for i, nb in enumerate(notebooks, 1):
        executed = layout.notebooks / nb.name
        print(f"[{i}/{len(notebooks)}] {nb.name} (profile={profile}) -> {executed}", flush=True)
        start = time.perf_counter()
        with PeakMemory() as memory:
            execute_notebook(nb, executed, params)
        seconds = time.perf_counter() - start
        times[nb.stem] = {"seconds": round(seconds, 2), "peak_rss_mb": round(memory.peak_mb, 1), "profile": profile}
        artifacts.write_json(layout.times, times)
        print(f"    done in {seconds:.1f} s, peak memory {memory.peak_mb:.0f} MB", flush=True)
    return run


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    parser.add_argument("--run-dir", default=None,
                        help="default: runs/<profile> in the repository; relative: from the current folder")
    parser.add_argument("--data-dir", default=None, help="real (or other) dataset in the Soundtracks layout; "
                        "relative: from the current folder")
    parser.add_argument("--allow-subset", action="store_true",
                        help="paper profile on real data other than the 360 Set-1 excerpts "
                             "(the split differs: not comparable with the published runs)")
    parser.add_argument("--notebooks", nargs="*", default=None,
                        help="numbers or names to run (default: all; given, it needs at least one)")
    parser.add_argument("--executor", default=None,
                        help="how training and attack jobs run: auto (default), inprocess, local[:N], "
                             "ray[:ADDRESS][@GPU_SHARE] (see mer_lib.jobs)")
    args = parser.parse_args(argv)
    try:
        run = run_notebooks(args.profile, args.run_dir, args.data_dir, args.notebooks,
                            allow_subset=args.allow_subset, executor=args.executor)
    except MerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"All notebooks done. Executed notebooks and artifacts: {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
