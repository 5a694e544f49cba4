"""Data preparation stage: dataset -> validated table -> split -> spectrogram cache.

:func:`prepare_data` is what every notebook calls first. It is resumable: a rerun reuses the synthetic dataset,
the cached spectrograms and statistics, and recomputes only what a configuration change invalidates. It writes
``run_dir/data/``: ``soundtracks_synthetic/`` (synthetic source only), ``cache/`` and ``dataset.csv``.
"""
from __future__ import annotations

import os
from pathlib import Path

from mer_lib import artifacts
from mer_lib.config import PROFILES, Profile, RunLayout, get_profile
from mer_lib.data.cache import PreparedData, prepare_cache
from mer_lib.data.layout import SET1_NUMBERS
from mer_lib.data.loader import load_soundtracks
from mer_lib.data.split import split_numbers
from mer_lib.data.synth.writer import generate_soundtracks
from mer_lib.errors import MerError


def _numbers_text(numbers: list[int], limit: int = 10) -> str:
    """``1, 2, 3`` or ``1, 2, ... (N more)``."""
    text = ", ".join(str(n) for n in numbers[:limit])
    return text + (f", ... ({len(numbers) - limit} more)" if len(numbers) > limit else "")


def published_comparability(profile: Profile, numbers: list[int], source_dir: str | os.PathLike,
                            allow_subset: bool = False) -> bool | None:
    """Whether a run can be compared with the published runs; an error if it silently could not.

    The paper's split (protocol §4) is a seeded random split of all 360 Set-1 excerpts: remove one and every test ID
    changes. Only real data split as in the ``paper`` profile is concerned.

    Returns
    -------
    bool or None
        ``None`` if the question does not arise, ``True`` for exactly :data:`SET1_NUMBERS`, ``False`` for another
        set of ``numbers`` accepted through ``allow_subset``.

    Raises
    ------
    MerError
        For another set without ``allow_subset``, naming the missing or unexpected numbers and the option.
    """
    if profile.data.source != "real" or profile.split != PROFILES["paper"].split:
        return None
    missing = sorted(set(SET1_NUMBERS) - set(numbers))
    extra = sorted(set(numbers) - set(SET1_NUMBERS))
    if not missing and not extra:
        return True
    if allow_subset:
        return False
    found = f"found {len(numbers)} rated excerpt(s)"
    found += f"; missing {len(missing)}: {_numbers_text(missing)}" if missing else ""
    found += f"; not Set-1 numbers: {_numbers_text(extra)}" if extra else ""
    raise MerError(
        f"{source_dir}: profile {profile.name!r} needs exactly the {len(SET1_NUMBERS)} Soundtracks Set-1 "
        f"excerpts (numbers 1-{len(SET1_NUMBERS)}), because the published train/validation/test split is "
        f"drawn from all of them; {found}. Restore the missing audio files and rating/metadata rows, or "
        "pass allow_subset=True to prepare_data to run on these excerpts anyway (the split then differs "
        "and the results are not comparable with the published runs)")


def dataset_dir(profile: Profile, run_dir: str | os.PathLike, data_dir: str | os.PathLike | None) -> Path:
    """Folder the dataset is read from: ``data_dir`` if given, else the synthetic one in ``run_dir``."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if profile.data.source == "real":
        raise MerError(f"profile {profile.name!r} reads the real datasets: pass data_dir=/path/to/data "
                       "(see docs/running.md for the expected layout)")
    return RunLayout(Path(run_dir).resolve()).synthetic_dataset


def prepare_data(profile: str | Profile, run_dir: str | os.PathLike,
                 data_dir: str | os.PathLike | None = None, progress: bool = True,
                 allow_subset: bool = False) -> PreparedData:
    """Generate (synthetic source) or locate the dataset of ``profile``, validate it, split it, cache spectrograms.

    Parameters
    ----------
    run_dir : path-like
        The run directory; everything is written below ``run_dir/data``.
    data_dir : path-like, optional
        A dataset in the loader's layout; required by a real-data profile, else generated if omitted.
    allow_subset : bool
        Real data with the paper's split only: accept excerpts other than Set 1's 360 (:func:`published_comparability`).

    Returns
    -------
    PreparedData
        ``table.attrs`` holds the loader's provenance (the files read).

    Raises
    ------
    MerError
        On a dataset problem, real data without ``data_dir``, or a Set-1 subset under the paper's split without
        ``allow_subset``.
    """
    profile = get_profile(profile)
    run_dir = Path(run_dir).resolve()
    source_dir = dataset_dir(profile, run_dir, data_dir)
    if not data_dir:
        generate_soundtracks(source_dir, n_excerpts=profile.data.n_excerpts,
                             duration_s=profile.data.duration_s, seed=profile.data.synth_seed,
                             sample_rate=profile.features.sample_rate, progress=progress)
    table = load_soundtracks(source_dir)
    comparable = published_comparability(profile, [int(n) for n in table.index], source_dir, allow_subset)
    split = split_numbers(table.index.to_numpy(), profile.split.fractions, profile.split.seed)
    prepared = prepare_cache(table, split, RunLayout(run_dir).cache, profile.features, progress)
    prepared.table.attrs = dict(table.attrs)
    prepared.unrated_audio = tuple(table.attrs.get("unrated_audio", ()))
    prepared.comparable_with_published = comparable
    csv = prepared.table.to_csv(float_format="%.6g")
    path = RunLayout(run_dir).dataset_table
    if not path.exists() or path.read_text() != csv:
        artifacts.write_text(path, csv)
    return prepared
