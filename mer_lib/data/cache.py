"""Preprocessing: spectrogram cache, global standardisation, fixed excerpts (protocol §3).

Quirks (protocol §3): the standardisation statistics cover every file, test split included, unless
``stats_split="train"``; the excerpt offsets are the project's own draw (the reference's stream is unpublished).

Every artifact is written atomically and reused only while its inputs are unchanged: ``manifest.json`` records each
file's audio SHA-256, spectrogram size and SHA-256 and the front-end hash; ``stats.json`` and ``offsets.json`` carry
the hash of their inputs (spectrogram content included). Damaged files are recomputed with a warning, and every
read through :class:`PreparedData` is checked against its record.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib import artifacts
from mer_lib.config import FeatureConfig
from mer_lib.data.frontend import LogFilteredSpectrogram, spectrogram_from_file
from mer_lib.errors import MerError
from mer_lib.progress import progress_bar

FRONTEND_KEYS = ("sample_rate", "fps", "frame_size", "bands_per_octave", "fmin", "fmax", "fref")
MANIFEST = "manifest.json"
#: What to do about a cached spectrogram found damaged after the cache was checked.
REBUILD_HINT = "rerun prepare_data (mer_lib.data.stage) or the notebook to recompute it"


def frontend_config(features: FeatureConfig) -> dict:
    """The subset of :class:`FeatureConfig` the spectrograms depend on."""
    cfg = {k: getattr(features, k) for k in FRONTEND_KEYS}
    cfg["madmom_chain"] = "int16-trunc-norm/trim_zeros/symmetric-hann/fft64/log10(1+x)"
    return cfg


def make_frontend(features: FeatureConfig) -> LogFilteredSpectrogram:
    """The :class:`LogFilteredSpectrogram` of a feature configuration."""
    return LogFilteredSpectrogram(sample_rate=features.sample_rate, fps=features.fps,
                                  frame_size=features.frame_size,
                                  bands_per_octave=features.bands_per_octave,
                                  fmin=features.fmin, fmax=features.fmax, fref=features.fref)


# --------------------------------------------------------------------------
# Pure computations
# --------------------------------------------------------------------------
def excerpt_offsets(frames: dict[int, int], excerpt_frames: int, seed: int) -> dict[int, int]:
    """Random start frame of every file's excerpt, drawn once (protocol §3).

    ``frames`` maps ``number -> frames``; ``numpy.random.default_rng(seed)`` draws in ascending ``number`` order.

    Returns
    -------
    dict
        ``number -> offset`` with ``0 <= offset <= max(frames - excerpt_frames, 0)``.
    """
    rng = np.random.default_rng(seed)
    return {int(n): int(rng.integers(0, max(frames[n] - excerpt_frames, 0) + 1)) for n in sorted(frames)}


def cut_excerpt(spec: np.ndarray, offset: int, excerpt_frames: int) -> np.ndarray:
    """``excerpt_frames`` frames from ``offset``, wrapping around if the file is short."""
    idx = (offset + np.arange(excerpt_frames)) % spec.shape[0]
    return spec[idx]


def standardisation_stats(specs: list[np.ndarray]) -> tuple[float, float]:
    """Global mean and population standard deviation over all values (float64)."""
    if not specs:
        raise MerError("no spectrograms to compute standardisation statistics on")
    total = sum(float(s.sum(dtype=np.float64)) for s in specs)
    count = sum(s.size for s in specs)
    mean = total / count
    var = sum(float(((s.astype(np.float64) - mean) ** 2).sum()) for s in specs) / count
    return mean, float(np.sqrt(var))


# --------------------------------------------------------------------------
# Integrity of the cache
# --------------------------------------------------------------------------
def spectrogram_path(cache_dir: str | os.PathLike, number: int) -> Path:
    """``cache_dir/spectrograms/NNN.npy``."""
    return Path(cache_dir) / "spectrograms" / f"{int(number):03d}.npy"


def spectrogram_record(entry: dict) -> dict:
    """``{"size", "sha256"}`` of the spectrogram of a manifest entry (``None`` where not recorded)."""
    entry = entry if isinstance(entry, dict) else {}
    return {"size": entry.get("spectrogram_size"), "sha256": entry.get("spectrogram_sha256")}


def spectrogram_digest(manifest: dict) -> str:
    """One SHA-256 over the recorded hashes of every spectrogram of a manifest; keys whatever depends on them."""
    return artifacts.config_hash({name: spectrogram_record(entry)["sha256"]
                                  for name, entry in sorted(manifest["files"].items())}, length=64)


def read_spectrogram(path: str | os.PathLike, record: dict | None = None) -> np.ndarray:
    """Read a cached spectrogram, checked first against ``record`` (:func:`spectrogram_record`) if given.

    A :class:`MerError` names the file if it is missing, unreadable, or differs from its record.
    """
    path = Path(path)
    if record is None:
        return artifacts.read_npy(path, hint=REBUILD_HINT)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MerError(f"{path}: cannot read the cached spectrogram ({exc.strerror}); {REBUILD_HINT}") from None
    if len(data) != record["size"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise MerError(f"{path}: the cached spectrogram changed after it was checked (its size or SHA-256 "
                       f"differs from its record in {path.parent.parent / MANIFEST}); {REBUILD_HINT}")
    return artifacts.read_npy_bytes(data, path, hint=REBUILD_HINT)


def _read_record_file(path: Path, what: str, required: tuple[str, ...]) -> dict:
    """A recomputable JSON file of the cache: ``{}`` if missing, ``{}`` with a warning if damaged."""
    if not path.exists():
        return {}
    try:
        data = artifacts.read_json(path, hint=f"recomputing {what}")
    except MerError as exc:
        warnings.warn(str(exc), stacklevel=3)
        return {}
    if not isinstance(data, dict) or any(k not in data for k in required):
        warnings.warn(f"{path}: damaged (expected a JSON object with {', '.join(required)}); recomputing {what}",
                      stacklevel=3)
        return {}
    return data


def _needs_spectrogram(entry, audio_path, spec_path: Path, manifest_path: Path) -> bool:
    """Whether a file's spectrogram must be (re)computed; warns when a cached one is damaged."""
    if not isinstance(entry, dict) or entry.get("audio_sha256") != artifacts.file_sha256(audio_path):
        return True  # new or changed audio
    if not spec_path.exists() or spectrogram_record(entry)["sha256"] is None:
        return True  # lost, or cached before spectrograms were recorded
    if artifacts.verify_record(spec_path, spectrogram_record(entry)):
        return False
    warnings.warn(f"{spec_path}: damaged cached spectrogram (its size or SHA-256 differs from its record in "
                  f"{manifest_path}); recomputing it", stacklevel=4)
    return True


# --------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------
@dataclass
class PreparedData:
    """The prepared dataset of a run: table, split, cached spectrograms, statistics.

    Attributes
    ----------
    table : pandas.DataFrame
        Indexed by ``number``: ``audio_path``, the targets (divided by 10), ``split``, ``frames`` and ``offset``.
    cache_dir : Path
        Holds ``spectrograms/``, ``manifest.json``, ``stats.json`` and ``offsets.json``.
    mean, std : float
        Global standardisation statistics.
    excerpt_frames : int
        Frames per excerpt.
    records : dict, optional
        ``number -> {"size", "sha256"}`` of every cached spectrogram; when given, every read is checked.
    unrated_audio : tuple of str
        Audio files of the dataset folder without ratings (not loaded; :func:`mer_lib.data.loader.load_soundtracks`).
    comparable_with_published : bool or None
        Whether results can be compared with the published runs (:func:`mer_lib.data.stage.published_comparability`).
    """

    table: pd.DataFrame
    cache_dir: Path
    mean: float
    std: float
    excerpt_frames: int
    records: dict | None = None
    unrated_audio: tuple[str, ...] = ()
    comparable_with_published: bool | None = None

    def spectrogram(self, number: int) -> np.ndarray:
        """Full, unstandardised cached spectrogram ``(frames, bands)`` of one file (checked, see ``records``)."""
        record = None if self.records is None else self.records[int(number)]
        return read_spectrogram(spectrogram_path(self.cache_dir, number), record)

    def excerpts(self, numbers=None, standardize: bool = True) -> np.ndarray:
        """Model inputs ``(N, 1, excerpt_frames, bands)`` float32 of ``numbers`` (default: every excerpt).

        ``standardize`` applies the global mean and std, as the model expects.
        """
        numbers = self.table.index if numbers is None else numbers
        out = [cut_excerpt(self.spectrogram(n), int(self.table.at[n, "offset"]), self.excerpt_frames)
               for n in numbers]
        x = np.stack(out)[:, None].astype(np.float32)
        if standardize:
            x = ((x - self.mean) / self.std).astype(np.float32)
        return x

    def numbers(self, split: str) -> np.ndarray:
        """Excerpt IDs of a split (``"train"``, ``"valid"``, ``"test"``), in split order."""
        sub = self.table[self.table["split"] == split]
        if sub.empty:
            raise MerError(f"unknown or empty split {split!r}")
        return sub.sort_values("split_position").index.to_numpy()


def cache_spectrograms(table: pd.DataFrame, cache_dir: str | os.PathLike, features: FeatureConfig,
                       progress: bool = True) -> dict[int, int]:
    """Compute (or reuse) the spectrogram of every file of ``table``; returns ``number -> frames``.

    Spectrograms go to ``cache_dir/spectrograms/NNN.npy``. One is reused only while its audio, the front end
    (``features``) and its recorded size and SHA-256 are unchanged; a damaged one (all, if ``manifest.json`` is
    damaged) is recomputed with a warning. Temporary files of killed writes are removed first.
    """
    files = _update_cache(table, cache_dir, features, progress)["files"]
    return {int(n): files[f"{int(n):03d}"]["frames"] for n in table.index}


def _update_cache(table: pd.DataFrame, cache_dir: str | os.PathLike, features: FeatureConfig,
                 progress: bool = True) -> dict:
    """:func:`cache_spectrograms`, returning the checked contents of ``manifest.json``."""
    cache_dir = Path(cache_dir)
    artifacts.remove_stale_temps(cache_dir)
    manifest_path = cache_dir / MANIFEST
    cfg = frontend_config(features)
    key = artifacts.config_hash(cfg)
    manifest = _read_record_file(manifest_path, "every cached spectrogram", ("frontend_hash", "files"))
    if manifest.get("frontend_hash") != key or not isinstance(manifest.get("files"), dict):
        manifest = {"frontend": cfg, "frontend_hash": key, "files": {}}
    files = manifest["files"]
    todo = []
    for number, path in table["audio_path"].items():
        name, spec_path = f"{int(number):03d}", spectrogram_path(cache_dir, number)
        if _needs_spectrogram(files.get(name), path, spec_path, manifest_path):
            todo.append((name, path, spec_path))
    frontend = make_frontend(features)
    for name, path, spec_path in progress_bar(todo, desc="spectrograms", enabled=progress and bool(todo),
                                              unit="files"):
        spec = spectrogram_from_file(path, frontend)
        artifacts.write_npy(spec_path, spec)
        record = artifacts.file_record(spec_path)
        files[name] = {"audio": str(path), "audio_sha256": artifacts.file_sha256(path),
                       "spectrogram": f"spectrograms/{name}.npy", "spectrogram_size": record["size"],
                       "spectrogram_sha256": record["sha256"], "frames": int(spec.shape[0]),
                       "bands": int(spec.shape[1])}
        artifacts.write_json(manifest_path, manifest)  # after every file: an interruption loses nothing
    if not todo and not manifest_path.exists():
        artifacts.write_json(manifest_path, manifest)
    return manifest


def _stats(cache_dir: Path, manifest: dict, records: dict[int, dict], numbers: list[int],
           stats_split: str) -> dict:
    """``stats.json`` (mean, std of the spectrograms of ``numbers``), reused if its key matches."""
    # content, not location: the same audio, front end and spectrograms give the same key wherever the run lives
    content = artifacts.config_hash({"frontend": manifest["frontend_hash"],
                                     "audio": {k: v["audio_sha256"] for k, v in manifest["files"].items()},
                                     "spectrograms": spectrogram_digest(manifest)})
    stats_key = artifacts.config_hash({"manifest": content, "numbers": numbers})
    stats_path = cache_dir / "stats.json"
    stats = _read_record_file(stats_path, "the standardisation statistics", ("key", "mean", "std"))
    if stats.get("key") != stats_key:
        mean, std = standardisation_stats([read_spectrogram(spectrogram_path(cache_dir, n), records[n])
                                           for n in numbers])
        stats = {"key": stats_key, "mean": mean, "std": std, "stats_split": stats_split, "n_files": len(numbers)}
        artifacts.write_json(stats_path, stats)
    return stats


def _offsets(cache_dir: Path, frames: dict[int, int], features: FeatureConfig) -> dict[str, int]:
    """``offsets.json`` (the excerpt offsets), reused if its key matches."""
    offsets_key = artifacts.config_hash({"frames": frames, "excerpt_frames": features.excerpt_frames,
                                         "seed": features.offset_seed})
    offsets_path = cache_dir / "offsets.json"
    stored = _read_record_file(offsets_path, "the excerpt offsets", ("key", "offsets"))
    if stored.get("key") != offsets_key:
        offs = excerpt_offsets(frames, features.excerpt_frames, features.offset_seed)
        stored = {"key": offsets_key, "excerpt_frames": features.excerpt_frames,
                  "seed": features.offset_seed, "offsets": {f"{n:03d}": o for n, o in offs.items()}}
        artifacts.write_json(offsets_path, stored)
    return stored["offsets"]


def prepare_cache(table: pd.DataFrame, split: dict[str, np.ndarray], cache_dir: str | os.PathLike,
                  features: FeatureConfig, progress: bool = True) -> PreparedData:
    """Spectrograms, standardisation statistics and excerpt offsets of a dataset, cached in ``cache_dir``.

    Parameters
    ----------
    table : pandas.DataFrame
        The loaded dataset (:func:`mer_lib.data.loader.load_soundtracks`).
    split : dict
        ``{"train"|"valid"|"test": excerpt numbers}`` (:func:`mer_lib.data.split.split_numbers`).
    features : FeatureConfig
        Front-end and preprocessing parameters (including ``stats_split`` and ``offset_seed``).

    Returns
    -------
    PreparedData
        Its reads of the cached spectrograms are checked against their records.
    """
    if features.stats_split not in ("all", "train"):
        raise MerError(f"stats_split must be 'all' or 'train', got {features.stats_split!r}")
    cache_dir = Path(cache_dir)
    manifest = _update_cache(table, cache_dir, features, progress)
    entries = {int(n): manifest["files"][f"{int(n):03d}"] for n in table.index}
    frames = {n: int(entry["frames"]) for n, entry in entries.items()}
    records = {n: spectrogram_record(entry) for n, entry in entries.items()}
    stats_numbers = sorted(table.index) if features.stats_split == "all" else sorted(split["train"])
    stats = _stats(cache_dir, manifest, records, [int(n) for n in stats_numbers], features.stats_split)
    offsets = _offsets(cache_dir, frames, features)

    out = table.copy()
    out["frames"] = [frames[int(n)] for n in out.index]
    out["offset"] = [offsets[f"{int(n):03d}"] for n in out.index]
    out["split"] = ""
    out["split_position"] = -1
    for name, numbers in split.items():
        out.loc[list(numbers), "split"] = name
        out.loc[list(numbers), "split_position"] = np.arange(len(numbers))
    if (out["split"] == "").any():
        missing = out.index[out["split"] == ""].tolist()[:10]
        raise MerError(f"excerpts not assigned to any split: {missing}")
    return PreparedData(table=out, cache_dir=cache_dir, mean=float(stats["mean"]), std=float(stats["std"]),
                        excerpt_frames=features.excerpt_frames, records=records)
