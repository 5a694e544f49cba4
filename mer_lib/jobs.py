"""Independent jobs (train one model, attack one model) and the executors that run them (:func:`run_jobs`).

Each job writes its own artifacts, keyed by a hash of its configuration, so jobs can run in any order, process or
machine that sees the run directory. Executors:

``"inprocess"``
    One job after the other in the calling process.
``"local"`` or ``"local:N"``
    ``N`` worker processes (default: one per CPU core; on CUDA :data:`JOBS_PER_GPU` per visible GPU, capped by the
    cores, spread over the GPUs round-robin). The pool is kept between calls: restart the kernel after editing
    ``mer_lib``, since workers keep the code they imported.
``"ray"``, ``"ray:ADDRESS"``, ``"ray[:ADDRESS]@F"``
    Tasks of a Ray cluster (the ``cluster`` extra), started here or at ``ADDRESS`` (``auto``, ``host:6379``,
    ``ray://host:10001``); a CUDA job asks for ``F`` (default :data:`RAY_GPU_FRACTION`) of a GPU. Every node needs
    this package and the run directory at the same path.
``"auto"`` (the default)
    ``local`` with one worker per CPU core on the CPU (``$MER_WORKERS`` overrides, ``0``: in-process); ``inprocess``
    on CUDA.

An integer is a worker count (``0`` or ``1``: in-process), and ``$MER_EXECUTOR`` sets the executor where none is
given. Every job runs with exactly :data:`JOB_THREADS` CPU threads, since trained weights depend on the thread count,
so results are bit-identical whatever the executor (protocol §10). A failing job does not stop the others: a
:class:`~mer_lib.errors.MerError` naming every failed job and its error is raised at the end.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch

from mer_lib.errors import MerError
from mer_lib.progress import progress_bar

__all__ = ["EXECUTORS", "EXECUTOR_ENV", "JOBS_PER_GPU", "JOB_THREADS", "RAY_GPU_FRACTION", "WORKERS_ENV",
           "Executor", "Plan", "default_workers", "job_threads", "parse_executor", "plan_executor", "run_jobs"]

#: CPU threads of every job (fixed, so that results do not depend on the executor).
JOB_THREADS = 1
#: Environment variable overriding the default number of worker processes (0: in-process).
WORKERS_ENV = "MER_WORKERS"
#: Environment variable naming the executor where none is given (e.g. ``local:8``, ``ray:auto``).
EXECUTOR_ENV = "MER_EXECUTOR"
#: Executor kinds.
EXECUTORS: tuple[str, ...] = ("auto", "inprocess", "local", "ray")
#: Local worker processes per GPU when ``local`` runs CUDA jobs without a count.
JOBS_PER_GPU = 8
#: Share of a GPU that one Ray task on CUDA asks for by default (4 jobs per GPU).
RAY_GPU_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class Executor:
    """How a list of jobs is run (module docstring; :func:`parse_executor` reads the string form).

    ``kind`` is one of :data:`EXECUTORS`; ``workers`` the ``local`` worker processes (``None``: the default);
    ``address`` the Ray cluster's (``None``: start Ray on this machine); ``gpu_fraction`` Ray's GPUs per CUDA job.
    """

    kind: str = "auto"
    workers: int | None = None
    address: str | None = None
    gpu_fraction: float = RAY_GPU_FRACTION

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise MerError(f"executor kind must be one of {list(EXECUTORS)}, got {self.kind!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise MerError(f"executor workers must be a non-negative integer, got {self.workers!r}")
        if not (isinstance(self.gpu_fraction, (int, float)) and math.isfinite(self.gpu_fraction)
                and 0 < self.gpu_fraction <= 1):
            raise MerError(f"executor gpu_fraction must be in (0, 1], got {self.gpu_fraction!r}")

    def __str__(self) -> str:
        if self.kind == "local" and self.workers is not None:
            return f"local:{self.workers}"
        if self.kind == "ray":
            text = "ray" if self.address is None else f"ray:{self.address}"
            return text if self.gpu_fraction == RAY_GPU_FRACTION else f"{text}@{self.gpu_fraction:g}"
        return self.kind


def parse_executor(spec: Executor | str | int | None = None) -> Executor:
    """An :class:`Executor` from its string form, a worker count, or ``None`` (``$MER_EXECUTOR``, else ``auto``).

    :class:`MerError` for an unknown kind or a malformed count, address or GPU share, naming the accepted forms.
    """
    if isinstance(spec, Executor):
        return spec
    if spec is None:
        env = os.environ.get(EXECUTOR_ENV, "").strip()
        return parse_executor(env) if env else Executor()
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise MerError(f"executor must be a string, a worker count or an Executor, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise MerError(f"executor: a worker count must be >= 0, got {spec}")
        return Executor("inprocess") if spec <= 1 else Executor("local", spec)
    return _parse_text(spec.strip())


_FORMS = "'auto', 'inprocess', 'local', 'local:N', 'ray', 'ray:ADDRESS', 'ray@F' or 'ray:ADDRESS@F'"


def _parse_text(text: str) -> Executor:
    kind, _, rest = text.partition(":")
    if kind in ("auto", "inprocess") and not rest:
        return Executor(kind)
    if kind == "local":
        if not rest:
            return Executor("local")
        if rest.isdigit():
            return Executor("local", int(rest))
        raise MerError(f"executor {text!r}: expected 'local:N' with N a non-negative integer")
    if kind == "ray" or kind.startswith("ray@"):
        return _parse_ray(text)
    raise MerError(f"unknown executor {text!r}; expected {_FORMS}")


def _parse_ray(text: str) -> Executor:
    body, fraction = text, RAY_GPU_FRACTION
    if "@" in text:
        body, share = text.rsplit("@", 1)
        try:
            fraction = float(share)
        except ValueError:
            raise MerError(f"executor {text!r}: the GPU share after '@' must be a number in (0, 1]") from None
    if body == "ray":
        address = None
    elif body.startswith("ray://"):
        address = body  # a Ray client address given directly
    elif body.startswith("ray:") and len(body) > len("ray:"):
        address = body[len("ray:"):]
    else:
        raise MerError(f"executor {text!r}: expected {_FORMS}")
    return Executor("ray", address=address, gpu_fraction=fraction)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What an executor does with one list of jobs (:func:`plan_executor`).

    ``kind``: ``"inprocess"``, ``"local"`` or ``"ray"``; ``local``: ``workers`` processes spread over ``gpus`` on CUDA;
    ``ray``: the cluster's ``address`` and the ``gpu_fraction`` per task (0 for CPU jobs).
    """

    kind: str
    workers: int = 0
    gpus: tuple[int, ...] = ()
    address: str | None = None
    gpu_fraction: float = 0.0


def _device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _gpu_ids(device: torch.device) -> tuple[int, ...]:
    if device.type != "cuda":
        return ()
    if device.index is not None:
        return (device.index,)
    return tuple(range(torch.cuda.device_count()))


def plan_executor(executor: Executor | str | int | None, n_jobs: int,
                  device: str | torch.device | None = None) -> Plan:
    """Resolve an executor for ``n_jobs`` jobs on ``device`` (never more local workers than jobs; one is in-process)."""
    ex = parse_executor(executor)
    dev = _device(device)
    if ex.kind == "ray":
        return Plan("ray", address=ex.address, gpu_fraction=ex.gpu_fraction if dev.type == "cuda" else 0.0)
    if ex.kind == "inprocess" or (ex.kind == "auto" and dev.type != "cpu"):
        return Plan("inprocess")
    gpus = _gpu_ids(dev)
    if ex.kind == "auto":
        workers = default_workers(n_jobs, dev)
    elif ex.workers is not None:
        workers = ex.workers
    else:
        workers = min(JOBS_PER_GPU * len(gpus), _cores()) if gpus else _cores()
    workers = min(workers, n_jobs)
    return Plan("inprocess") if workers <= 1 else Plan("local", workers, gpus)


def default_workers(n_jobs: int, device: str | torch.device | None = None) -> int:
    """Worker processes of the ``auto`` executor for ``n_jobs`` jobs: one per usable CPU core, at most one per job.

    ``$MER_WORKERS`` overrides the core count (a non-integer raises :class:`MerError`). Returns 0 (in-process) for a
    single worker or a CUDA ``device`` (one GPU context; ``None`` means CUDA if available).
    """
    if _device(device).type != "cpu":
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
        cores = _cores()
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


def _call(fn: Callable[[Any], Any], job: Any, threads: int) -> Any:
    with job_threads(threads):
        return fn(job)


#: One finished job: its index, whether it succeeded, and its result or exception.
Outcome = tuple[int, bool, Any]


def _run_inprocess(fn: Callable[[Any], Any], jobs: list, plan: Plan, threads: int) -> Iterator[Outcome]:
    for i, job in enumerate(jobs):
        try:
            value = _call(fn, job, threads)
        except Exception as exc:  # a failing job must not lose the others
            yield i, False, exc
            continue
        yield i, True, value


def _worker_init(threads: int, counter: Any, gpus: tuple[int, ...]) -> None:
    # an interrupt (Ctrl-C, a kernel's interrupt or shutdown) reaches the caller, which ends the workers (_drop_pool);
    # kept workers that are idle must not die of it with a traceback each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    if gpus:  # spread the workers over the GPUs: worker k uses GPU k mod len(gpus) for "cuda"
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        torch.cuda.set_device(gpus[index % len(gpus)])


#: The local pool kept between calls: ``(key, pool)``, key = (workers, threads, GPUs, cwd, environment).
_POOL: list = [None, None]


def _local_pool(plan: Plan, threads: int) -> ProcessPoolExecutor:
    """The pool kept from the last call if its key (workers, threads, GPUs, cwd, environment) holds, else a new one."""
    key = (plan.workers, threads, plan.gpus, os.getcwd(), tuple(sorted(os.environ.items())))
    if _POOL[0] == key and not getattr(_POOL[1], "_broken", False):
        return _POOL[1]
    _drop_pool()
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    _POOL[:] = [key, ProcessPoolExecutor(plan.workers, mp_context=context, initializer=_worker_init,
                                         initargs=(threads, counter, plan.gpus))]
    return _POOL[1]


def _drop_pool(terminate: bool = False) -> None:
    """Shut the kept pool down: its workers exit once idle, or at once with ``terminate`` (jobs in flight are lost)."""
    pool = _POOL[1]
    if pool is not None:
        if terminate:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=not terminate, cancel_futures=True)
    _POOL[:] = [None, None]


def _run_local(fn: Callable[[Any], Any], jobs: list, plan: Plan, threads: int) -> Iterator[Outcome]:
    pool = _local_pool(plan, threads)
    try:
        futures = {pool.submit(_call, fn, job, threads): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                value = future.result()
            except Exception as exc:
                yield futures[future], False, exc
                continue
            yield futures[future], True, value
    except BaseException:  # interrupted (or a worker died): end the workers, whatever they were running
        _drop_pool(terminate=True)
        raise
    if getattr(pool, "_broken", False):
        _drop_pool()


def _import_ray() -> Any:
    try:
        import ray  # optional dependency: the "cluster" extra
    except ImportError:
        raise MerError("the 'ray' executor needs Ray: pip install -e \".[cluster]\"") from None
    return ray


def _run_ray(fn: Callable[[Any], Any], jobs: list, plan: Plan, threads: int) -> Iterator[Outcome]:
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=plan.address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=threads, num_gpus=plan.gpu_fraction, max_retries=0)(_call)
        refs = {task.remote(fn, job, threads): i for i, job in enumerate(jobs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    value = ray.get(ref)
                except Exception as exc:
                    yield refs[ref], False, getattr(exc, "cause", None) or exc  # the job's own exception
                    continue
                yield refs[ref], True, value
    finally:
        if started:
            ray.shutdown()


_RUNNERS = {"inprocess": _run_inprocess, "local": _run_local, "ray": _run_ray}


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], executor: Executor | str | int | None = None, *,
             names: Sequence[str] | None = None, desc: str = "jobs", progress: bool = True,
             device: str | torch.device | None = None, threads: int = JOB_THREADS) -> list[Any]:
    """Run ``fn(job)`` for every job with an executor; return the results in job order.

    Parameters
    ----------
    fn, jobs : callable, sequence
        A module-level function (workers import it by name) and the picklable jobs; results must be picklable.
    executor : Executor, str or int, optional
        How to run them (:func:`parse_executor`); ``None``: ``$MER_EXECUTOR``, else ``"auto"``.
    names : sequence of str, optional
        A name per job for progress and error messages (default: the job's repr).
    desc, progress : str, bool
        Label of the progress bar (it counts finished jobs); whether to show it.
    device : str or torch.device, optional
        The jobs' device: sets the defaults, the GPUs of a local pool and the GPU share of a Ray task.
    threads : int
        CPU threads per job.

    Raises
    ------
    MerError
        For an invalid executor; after all jobs ran, if any failed, naming every failed job and its error.
    """
    jobs = list(jobs)
    names = [repr(j) for j in jobs] if names is None else list(names)
    if len(names) != len(jobs):
        raise MerError(f"run_jobs: {len(names)} names for {len(jobs)} jobs")
    plan = plan_executor(executor, len(jobs), device)
    results: list[Any] = [None] * len(jobs)
    failures: list[tuple[str, str]] = []
    bar = progress_bar(total=len(jobs), desc=desc, enabled=progress and bool(jobs), unit="jobs")
    if jobs:
        for i, ok, value in _RUNNERS[plan.kind](fn, jobs, plan, threads):
            if ok:
                results[i] = value
            else:
                failures.append((names[i], _describe(value)))
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
