"""Data preparation stage: dataset -> validated table -> split -> spectrogram cache.

:func:`prepare_data` is what every notebook calls first. It is resumable: on a
rerun it reuses the generated synthetic dataset, the cached spectrograms and
statistics, and only recomputes what a configuration change invalidates.

Run directory layout (``run_dir``)::

    data/soundtracks_synthetic/   the generated dataset (synthetic source only)
    data/cache/                   spectrograms/*.npy, manifest.json, stats.json, offsets.json
    data/dataset.csv              the prepared table (targets, split, offsets)
"""
from __future__ import annotations

import os
from pathlib import Path

from mer_lib import artifacts
from mer_lib.config import Profile, RunLayout, get_profile
from mer_lib.data.cache import PreparedData, prepare_cache
from mer_lib.data.loader import load_soundtracks
from mer_lib.data.split import split_numbers
from mer_lib.data.synth.writer import generate_soundtracks
from mer_lib.errors import MerError


def dataset_dir(profile: Profile, run_dir: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    """Folder the dataset is read from: ``data_dir`` if given, else the synthetic one in ``run_dir``."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if profile.data.source == "real":
        raise MerError(f"profile {profile.name!r} reads the real datasets: pass data_dir=/path/to/data "
                       "(see the README for the expected layout)")
    return RunLayout(Path(run_dir).resolve()).synthetic_dataset


def prepare_data(profile: str | Profile, run_dir: str | os.PathLike,
                 data_dir: str | os.PathLike | None = None, progress: bool = True) -> PreparedData:
    """Generate (synthetic source) or locate the dataset, validate it, split it, cache spectrograms.

    Parameters
    ----------
    profile : str or Profile
        Run profile (``"smoke"``, ``"quick"``, ``"paper"``).
    run_dir : path-like
        The run directory; everything is written below ``run_dir/data``.
    data_dir : path-like, optional
        A dataset in the Soundtracks + Mid-level layout (real or synthetic).
        If omitted and the profile's source is synthetic, the embedded
        dataset is generated into ``run_dir/data/soundtracks_synthetic``.
    progress : bool
        Show progress bars.

    Returns
    -------
    PreparedData
    """
    profile = get_profile(profile)
    run_dir = Path(run_dir).resolve()
    source_dir = dataset_dir(profile, run_dir, data_dir)
    if not data_dir:
        generate_soundtracks(source_dir, n_excerpts=profile.data.n_excerpts,
                             duration_s=profile.data.duration_s, seed=profile.data.synth_seed,
                             sample_rate=profile.features.sample_rate, progress=progress)
    table = load_soundtracks(source_dir)
    split = split_numbers(table.index.to_numpy(), profile.split.fractions, profile.split.seed)
    prepared = prepare_cache(table, split, RunLayout(run_dir).cache, profile.features, progress)
    csv = prepared.table.to_csv(float_format="%.6g")
    path = RunLayout(run_dir).dataset_table
    if not path.exists() or path.read_text() != csv:
        artifacts.write_text(path, csv)
    return prepared
