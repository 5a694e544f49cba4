"""Independent jobs (train one model, attack one model) run in-process or in worker processes.

Training and attacking the models of a run are lists of independent jobs:
one (system, seed) to train, one (model, attack setting) to attack. Each job
writes its own artifacts, keyed by a hash of its configuration, so jobs can
run in any order and in any process. :func:`run_jobs` runs such a list either
in the calling process or in a pool of worker processes.

Why worker processes: the quick profile's models are small (width 0.125), and
PyTorch's intra-op threading helps them little: on the 2-core reference machine one
training process reaches 189 examples/s with 1 thread and 219 with 2, while two
1-thread worker processes reach 378 together, x1.73 (``benchmarks/jobs_throughput.py``).

Determinism: every job runs with exactly :data:`JOB_THREADS` CPU threads,
whichever executor runs it, because float reductions (and therefore trained
weights) depend on the thread count. A job therefore gives bit-identical
artifacts in-process and in a worker, and reruns on one machine are
bit-identical whatever ``workers`` is.

A failing job does not stop the others: every job is run, the finished ones
keep their artifacts, and a :class:`~mer_lib.errors.MerError` listing each
failed job and its error is raised at the end.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from mer_lib.errors import MerError
from mer_lib.progress import progress_bar

__all__ = ["JOB_THREADS", "WORKERS_ENV", "default_workers", "job_threads", "run_jobs"]

#: CPU threads of every job (fixed, so that results do not depend on the executor).
JOB_THREADS = 1
#: Environment variable overriding the default number of worker processes (0: in-process).
WORKERS_ENV = "MER_WORKERS"


def default_workers(n_jobs: int, device: str | torch.device | None = None) -> int:
    """Worker processes for ``n_jobs`` jobs: one per usable CPU core, at most one per job.

    ``$MER_WORKERS`` overrides the core count (``0`` runs every job in the
    calling process). Jobs on a CUDA device run in-process (one GPU context).

    Parameters
    ----------
    n_jobs : int
        Number of jobs to run.
    device : str or torch.device, optional
        The jobs' device; ``None`` means CUDA if available.

    Returns
    -------
    int
        0 (in-process) or the number of worker processes.
    """
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if dev.type != "cpu":
        return 0
    env = os.environ.get(WORKERS_ENV)
    if env is not None and env.strip() != "":
        try:
            cores = int(env)
        except ValueError:
            raise MerError(f"${WORKERS_ENV}={env!r}: expected a non-negative integer") from None
        if cores < 0:
            raise MerError(f"${WORKERS_ENV}={env!r}: expected a non-negative integer")
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, n_jobs)
    return 0 if workers <= 1 else workers


@contextlib.contextmanager
def job_threads(threads: int = JOB_THREADS) -> Iterator[None]:
    """Run the block with ``threads`` intra-op CPU threads; the previous count is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _call(fn: Callable[[Any], Any], job: Any, threads: int) -> Any:
    with job_threads(threads):
        return fn(job)


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None = None, *,
             names: Sequence[str] | None = None, desc: str = "jobs", progress: bool = True,
             device: str | torch.device | None = None, threads: int = JOB_THREADS) -> list[Any]:
    """Run ``fn(job)`` for every job; return the results in job order.

    Parameters
    ----------
    fn : callable
        A module-level function (worker processes import it by name) taking
        one job and returning a picklable result (typically an artifact path).
    jobs : sequence
        Picklable job descriptions.
    workers : int, optional
        Worker processes; ``0`` or ``1`` runs in the calling process; ``None``:
        :func:`default_workers`.
    names : sequence of str, optional
        A name per job for progress and error messages (default: the job's repr).
    desc : str
        Progress-bar label; the bar counts finished jobs.
    progress : bool
        Show the progress bar.
    device : str or torch.device, optional
        The jobs' device, for the default number of workers.
    threads : int
        CPU threads per job.

    Returns
    -------
    list
        ``fn(job)`` of every job, in the order of ``jobs``.

    Raises
    ------
    MerError
        After all jobs ran, if any failed: names every failed job and its error.
    """
    jobs = list(jobs)
    names = [repr(j) for j in jobs] if names is None else list(names)
    if len(names) != len(jobs):
        raise MerError(f"run_jobs: {len(names)} names for {len(jobs)} jobs")
    if workers is None:
        workers = default_workers(len(jobs), device)
    if int(workers) < 0:
        raise MerError(f"run_jobs: workers must be >= 0, got {workers}")
    results: list[Any] = [None] * len(jobs)
    failures: list[tuple[str, str]] = []
    bar = progress_bar(total=len(jobs), desc=desc, enabled=progress and bool(jobs), unit="jobs")
    if int(workers) <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            try:
                results[i] = _call(fn, job, threads)
            except Exception as exc:  # a failing job must not lose the others
                failures.append((names[i], _describe(exc)))
            bar.update(1)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(int(workers), mp_context=context, initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_call, fn, job, threads): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except Exception as exc:
                    failures.append((names[i], _describe(exc)))
                bar.update(1)
    bar.close()
    if failures:
        lines = "\n".join(f"  - {name}: {error}" for name, error in failures)
        raise MerError(f"{len(failures)} of {len(jobs)} jobs ({desc}) failed; the others finished and "
                       f"kept their artifacts:\n{lines}")
    return results


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MerError):
        return str(exc)
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return last
