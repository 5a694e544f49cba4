"""Preprocessing: spectrogram cache, global standardisation, fixed excerpts (protocol §3).

Reference behaviour reproduced here:

* every file's full log-filtered spectrogram is computed once
  (:func:`mer_lib.data.frontend.spectrogram_from_file`) and cached as ``.npy``;
* one global mean and one global standard deviation (population, over every
  value of every frame of every file) standardise all spectrograms. The
  reference uses all 360 files, test excerpts included; ``stats_split="train"``
  computes them on the training split only;
* one 10-s excerpt (313 frames) per file, at a random offset drawn once with
  seed 42 (``numpy.random.default_rng(42).integers(0, frames - 313 + 1)`` in
  ascending ``number`` order; the reference's exact random stream is not
  published, so the offsets themselves are the project's); a file shorter than
  the excerpt is padded by wrapping around.

Every artifact is written atomically. ``manifest.json`` records, per file, the
audio's SHA-256 and the front-end configuration hash: a rerun skips files whose
audio and configuration are unchanged and recomputes the others.
``stats.json`` and ``offsets.json`` carry the hash of their inputs and are
recomputed only when those change.
"""
from __future__ import annotations

import os
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
    """Random start frame of the excerpt of every file, drawn once.

    Parameters
    ----------
    frames : dict
        ``number -> number of frames`` of every file.
    excerpt_frames : int
        Excerpt length in frames.
    seed : int
        Seed of ``numpy.random.default_rng``; draws happen in ascending
        ``number`` order, so the offsets do not depend on dict order.

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
# The cache
# --------------------------------------------------------------------------
@dataclass
class PreparedData:
    """The prepared dataset of a run: table, split, cached spectrograms, statistics.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per excerpt, indexed by ``number``: ``audio_path``, the targets
        (divided by 10), ``split``, ``frames`` and ``offset``.
    cache_dir : Path
        Folder holding ``spectrograms/``, ``manifest.json``, ``stats.json``,
        ``offsets.json``.
    mean, std : float
        Global standardisation statistics.
    excerpt_frames : int
        Frames per excerpt.
    """

    table: pd.DataFrame
    cache_dir: Path
    mean: float
    std: float
    excerpt_frames: int

    def spectrogram(self, number: int) -> np.ndarray:
        """Full, unstandardised cached spectrogram ``(frames, bands)`` of one file."""
        return artifacts.read_npy(self.cache_dir / "spectrograms" / f"{int(number):03d}.npy")

    def excerpts(self, numbers=None, standardize: bool = True) -> np.ndarray:
        """Model inputs ``(N, 1, excerpt_frames, bands)`` float32.

        Parameters
        ----------
        numbers : sequence of int, optional
            Excerpt IDs (default: every excerpt, in ``number`` order).
        standardize : bool
            Apply the global mean/std (the model's input) or not.
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
    """Compute (or reuse) the spectrogram of every file of ``table``.

    Parameters
    ----------
    table : pandas.DataFrame
        Indexed by ``number`` with an ``audio_path`` column.
    cache_dir : path-like
        Cache folder; spectrograms go to ``cache_dir/spectrograms/NNN.npy``.
    features : FeatureConfig
        Front-end parameters; a change invalidates every cached file.
    progress : bool
        Show a progress bar (:func:`mer_lib.progress.progress_bar`).

    Returns
    -------
    dict
        ``number -> frames`` of every file.
    """
    cache_dir = Path(cache_dir)
    manifest_path = cache_dir / "manifest.json"
    cfg = frontend_config(features)
    key = artifacts.config_hash(cfg)
    manifest = artifacts.read_json(manifest_path) if manifest_path.exists() else {}
    if manifest.get("frontend_hash") != key:
        manifest = {"frontend": cfg, "frontend_hash": key, "files": {}}
    files = manifest["files"]
    frontend = make_frontend(features)
    todo = []
    for number, path in table["audio_path"].items():
        name = f"{int(number):03d}"
        entry = files.get(name)
        spec_path = cache_dir / "spectrograms" / f"{name}.npy"
        if entry is None or not spec_path.exists() or entry["audio_sha256"] != artifacts.file_sha256(path):
            todo.append((name, path, spec_path))
    for name, path, spec_path in progress_bar(todo, desc="spectrograms", enabled=progress and bool(todo),
                                              unit="files"):
        spec = spectrogram_from_file(path, frontend)
        artifacts.write_npy(spec_path, spec)
        files[name] = {"audio": str(path), "audio_sha256": artifacts.file_sha256(path),
                       "spectrogram": f"spectrograms/{name}.npy", "frames": int(spec.shape[0]),
                       "bands": int(spec.shape[1])}
        artifacts.write_json(manifest_path, manifest)  # after every file: an interruption loses nothing
    if not todo and not manifest_path.exists():
        artifacts.write_json(manifest_path, manifest)
    return {int(n): files[f"{int(n):03d}"]["frames"] for n in table.index}


def prepare_cache(table: pd.DataFrame, split: dict[str, np.ndarray], cache_dir: str | os.PathLike,
                  features: FeatureConfig, progress: bool = True) -> PreparedData:
    """Spectrograms, standardisation statistics and excerpt offsets of a dataset.

    Parameters
    ----------
    table : pandas.DataFrame
        The loaded dataset (:func:`mer_lib.data.loader.load_soundtracks`).
    split : dict
        ``{"train"|"valid"|"test": excerpt numbers}`` (:func:`mer_lib.data.split.split_numbers`).
    cache_dir : path-like
        Where the cache lives (inside the run directory).
    features : FeatureConfig
        Front-end and preprocessing parameters.
    progress : bool
        Show progress bars.

    Returns
    -------
    PreparedData
    """
    if features.stats_split not in ("all", "train"):
        raise MerError(f"stats_split must be 'all' or 'train', got {features.stats_split!r}")
    cache_dir = Path(cache_dir)
    frames = cache_spectrograms(table, cache_dir, features, progress)
    manifest = artifacts.read_json(cache_dir / "manifest.json")
    # content, not location: the same audio and front end give the same key wherever the run lives
    manifest_hash = artifacts.config_hash({"frontend": manifest["frontend_hash"],
                                           "audio": {k: v["audio_sha256"] for k, v in manifest["files"].items()}})

    stats_numbers = sorted(table.index) if features.stats_split == "all" else sorted(split["train"])
    stats_key = artifacts.config_hash({"manifest": manifest_hash, "numbers": stats_numbers})
    stats_path = cache_dir / "stats.json"
    stats = artifacts.read_json(stats_path) if stats_path.exists() else {}
    if stats.get("key") != stats_key:
        mean, std = standardisation_stats([artifacts.read_npy(cache_dir / "spectrograms" / f"{n:03d}.npy")
                                           for n in stats_numbers])
        stats = {"key": stats_key, "mean": mean, "std": std, "stats_split": features.stats_split,
                 "n_files": len(stats_numbers)}
        artifacts.write_json(stats_path, stats)

    offsets_key = artifacts.config_hash({"frames": frames, "excerpt_frames": features.excerpt_frames,
                                         "seed": features.offset_seed})
    offsets_path = cache_dir / "offsets.json"
    stored = artifacts.read_json(offsets_path) if offsets_path.exists() else {}
    if stored.get("key") != offsets_key:
        offs = excerpt_offsets(frames, features.excerpt_frames, features.offset_seed)
        stored = {"key": offsets_key, "excerpt_frames": features.excerpt_frames,
                  "seed": features.offset_seed, "offsets": {f"{n:03d}": o for n, o in offs.items()}}
        artifacts.write_json(offsets_path, stored)

    out = table.copy()
    out["frames"] = [frames[int(n)] for n in out.index]
    out["offset"] = [stored["offsets"][f"{int(n):03d}"] for n in out.index]
    out["split"] = ""
    out["split_position"] = -1
    for name, numbers in split.items():
        out.loc[list(numbers), "split"] = name
        out.loc[list(numbers), "split_position"] = np.arange(len(numbers))
    if (out["split"] == "").any():
        missing = out.index[out["split"] == ""].tolist()[:10]
        raise MerError(f"excerpts not assigned to any split: {missing}")
    return PreparedData(table=out, cache_dir=cache_dir, mean=float(stats["mean"]),
                        std=float(stats["std"]), excerpt_frames=features.excerpt_frames)

