"""Atomic, pickle-free artifact I/O, integrity records and configuration hashing (protocol §10).

Every artifact is written to a temporary file beside it and renamed into place, so an interrupted run never leaves a
half-written file (:func:`remove_stale_temps` clears what killed writes leave). Results are keyed by
:func:`config_hash`; arrays and models are recorded with size and SHA-256 (:func:`file_record`) and checked when read
again. A file that cannot be read gives a :class:`~mer_lib.errors.MerError` naming it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from mer_lib.errors import MerError

#: Name of the temporary file of an atomic write of ``<name>`` (:func:`atomic_path`): ``.<name>.<pid>-<8 chars>.tmp``.
TEMP_NAME = re.compile(r"\..+\.(?P<pid>\d+)-[a-z0-9_]{8}\.tmp")

#: The integrity record of an artifact folder (:func:`write_checksums`, :func:`checksum_problem`).
CHECKSUMS_FILE = "checksums.json"

#: What to do with a damaged file the pipeline can recompute.
RECOMPUTE_HINT = "delete it and rerun to recompute it"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (parents created); rename it into place on success, remove it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's process id is part of the name: remove_stale_temps leaves a live writer's file alone
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; use the usual file mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths, tuples and dataclasses to JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def dumps_json(obj: Any) -> str:
    """Canonical JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as canonical JSON."""
    return write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike, hint: str = RECOMPUTE_HINT) -> Any:
    """Read a JSON file; :class:`MerError` naming the file and the fault if it is not valid UTF-8 JSON.

    ``hint``, what to do about a damaged file, ends the error message.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise MerError(f"{path}: damaged JSON file ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                       f"{hint}") from None
    except UnicodeDecodeError as exc:
        raise MerError(f"{path}: damaged JSON file (not UTF-8 text: {exc.reason} at byte {exc.start}); "
                       f"{hint}") from None


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Atomically write ``array`` as ``.npy`` (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def read_npy(path: str | os.PathLike, hint: str = RECOMPUTE_HINT) -> np.ndarray:
    """Read a ``.npy`` file; :class:`MerError` naming it if missing, unreadable or pickled (``hint``: see read_json)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MerError(f"{path}: missing; expected a .npy array written by this pipeline") from None
    except (ValueError, EOFError, OSError) as exc:
        raise MerError(f"{path}: not a readable .npy array ({exc}); {hint}") from None


def read_npy_bytes(data: bytes, path: str | os.PathLike, hint: str = RECOMPUTE_HINT) -> np.ndarray:
    """Parse the bytes of a ``.npy`` file already read from ``path`` (named in errors); no pickles."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise MerError(f"{path}: not a readable .npy array ({exc}); {hint}") from None


def read_torch(path: str | os.PathLike, hint: str = RECOMPUTE_HINT) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, failures named (``hint`` as for :func:`read_json`).

    :class:`MerError` if the file is missing or cannot be loaded (damaged, or holding more than tensors and containers).
    """
    import torch  # here, not at the top: reading data and JSON does not need torch

    path = Path(path)
    if not path.is_file():
        raise MerError(f"{path}: missing; expected a torch file written by this pipeline")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, OSError, ...
        first = (str(exc).strip() or "no details").splitlines()[0].split(". ")[0]
        raise MerError(f"{path}: damaged torch file ({type(exc).__name__}: {first}); {hint}") from None


def config_hash(config: Any, length: int = 12) -> str:
    """Stable hash of a configuration: the first ``length`` hex digits of the SHA-256 of its JSON form."""
    text = json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def array_sha256(a: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order; dtype and shape are the caller's to fix)."""
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Integrity records and leftovers of killed writes
# --------------------------------------------------------------------------
def file_record(path: str | os.PathLike) -> dict:
    """The integrity record of a written file: ``{"size": bytes, "sha256": hex digest}``."""
    return {"size": Path(path).stat().st_size, "sha256": file_sha256(path)}


def verify_file(path: str | os.PathLike, size: int | None, sha256: str | None) -> bool:
    """Whether ``path`` has exactly ``size`` bytes (checked first) and SHA-256 ``sha256``; a ``None`` never matches."""
    path = Path(path)
    if size is None or sha256 is None or not path.is_file():
        return False
    return path.stat().st_size == int(size) and file_sha256(path) == sha256


def verify_record(path: str | os.PathLike, record: dict | None) -> bool:
    """:func:`verify_file` against a :func:`file_record` (``None`` or an incomplete record never matches)."""
    record = record if isinstance(record, dict) else {}
    return verify_file(path, record.get("size"), record.get("sha256"))


def write_checksums(folder: str | os.PathLike, names: Iterable[str]) -> Path:
    """Record the files ``names`` of ``folder`` in ``folder/checksums.json`` (``{name: {"size", "sha256"}}``)."""
    folder = Path(folder)
    return write_json(folder / CHECKSUMS_FILE, {name: file_record(folder / name) for name in names})


def checksum_problem(folder: str | os.PathLike, required: Iterable[str] = ()) -> str | None:
    """What is wrong with the files recorded in ``folder/checksums.json`` (``required`` must be recorded), or ``None``.

    The answer is a sentence starting with the damaged file's path: ``".../model.pt: damaged (its size or ..."``.
    """
    path = Path(folder) / CHECKSUMS_FILE
    if not path.exists():
        return f"{path}: missing; the files of {folder} cannot be checked"
    try:
        record = read_json(path)
    except MerError as exc:
        return str(exc).split("; ")[0]
    if not isinstance(record, dict) or any(name not in record for name in required):
        return f"{path}: damaged (expected a record of {', '.join(required) or 'the files'})"
    for name, entry in sorted(record.items()):
        if not verify_record(path.parent / name, entry):
            what = "damaged" if (path.parent / name).exists() else "missing"
            return f"{path.parent / name}: {what} (its size or SHA-256 differs from its record in {path})"
    return None


def finished_problem(folder: str | os.PathLike, marker: str, recorded: Iterable[str]) -> str | None:
    """What is wrong with a finished result folder (a sentence starting with the damaged file's path), or ``None``.

    Every stage writes its results, then ``checksums.json``, then ``marker`` (a JSON summary) last: the marker must
    read, and the ``recorded`` files (and any other file recorded) must match ``checksums.json``.
    """
    try:
        read_json(Path(folder) / marker)
    except (MerError, OSError) as exc:
        return str(exc).split("; ")[0]
    return checksum_problem(folder, recorded)


def environment() -> dict:
    """The library versions a result was computed with (recorded in ``config.json``)."""
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__}


def config_record(key: dict, **extra: Any) -> dict:
    """The usual ``config.json`` of a cached result: its hash, the hashed ``key``, ``extra`` fields, the environment."""
    return {"hash": config_hash(key), "config": key, **extra, "environment": environment()}


@dataclasses.dataclass(frozen=True)
class CachedStage:
    """A stage whose results are folders keyed by a hash of what they depend on (protocol §10).

    :meth:`run` writes ``config.json``, lets ``compute`` write the result files, records them in ``checksums.json``
    and writes the JSON summary ``marker`` last. A folder with an intact marker and records is reused; a damaged one
    is computed again with a warning naming the file.

    Attributes
    ----------
    marker : str
        The summary file; its presence marks a finished result.
    required : tuple of str
        Result files every finished folder records.
    redo : str
        What recomputing is called in warnings, e.g. ``"retraining the model"``.
    """

    marker: str
    required: tuple[str, ...]
    redo: str

    def problem(self, folder: str | os.PathLike) -> str | None:
        """What is wrong with a finished folder (a sentence starting with the file's path), or ``None``."""
        folder = Path(folder)
        if not (folder / self.marker).exists():
            return f"{folder}: no finished result ({self.marker} missing)"
        return finished_problem(folder, self.marker, self.required)

    def is_finished(self, folder: str | os.PathLike) -> bool:
        """Whether ``folder`` is reusable as it is; a damaged one warns and loses its marker (so it is recomputed)."""
        folder = Path(folder)
        if not (folder / self.marker).exists():
            return False
        problem = finished_problem(folder, self.marker, self.required)
        if problem is None:
            return True
        warnings.warn(f"{problem}; {self.redo} in {folder}", stacklevel=3)
        (folder / self.marker).unlink(missing_ok=True)
        return False

    def check(self, folder: str | os.PathLike, hint: str) -> Path:
        """``folder`` if it holds an intact finished result, else :class:`MerError` naming the problem and ``hint``."""
        problem = self.problem(folder)
        if problem is not None:
            raise MerError(f"{problem}; {hint}")
        return Path(folder)

    def run(self, folder: str | os.PathLike, config: dict,
            compute: Callable[[Path], tuple[Iterable[str], dict]], overwrite: bool = False) -> Path:
        """Reuse ``folder`` if finished (unless ``overwrite``), else compute it.

        ``config`` is written to ``config.json`` (:func:`config_record`); ``compute(folder)`` writes the result files
        and returns their names and the summary.
        """
        folder = Path(folder)
        if not overwrite and self.is_finished(folder):
            return folder
        (folder / self.marker).unlink(missing_ok=True)
        remove_stale_temps(folder)
        write_json(folder / "config.json", config)
        files, summary = compute(folder)
        write_checksums(folder, files)
        write_json(folder / self.marker, summary)  # last: its presence marks a finished result
        return folder


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0  # exists but belongs to someone else / not a valid pid
    return True


def remove_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed atomic writes left below ``root``; return them, sorted.

    Only files named like :data:`TEMP_NAME` whose writing process no longer runs on this machine are removed, so a
    notebook or worker still writing in the same run directory is safe. A missing ``root`` is fine.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.rglob(".*.tmp")):
        match = TEMP_NAME.fullmatch(path.name)
        if match and path.is_file() and not path.is_symlink() and not _process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
