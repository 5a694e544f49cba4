"""Writes the synthetic dataset in the real datasets' file formats (:mod:`mer_lib.data.layout`), resumably."""
from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.special import ndtr

from mer_lib.artifacts import config_hash, file_sha256, read_json, write_bytes, write_json, write_text
from mer_lib.config import EMOTIONS, MIDLEVEL, MIDLEVEL_RANGE, SAMPLE_RATE
from mer_lib.data.layout import (
    ANNOTATIONS_RELPATH,
    CONTROLS_RELPATH,
    GENERATOR_FILE,
    METADATA_RELPATH,
    RATINGS_FILE,
    SOUNDTRACKS_SOURCE,
    TEXT_FILES,
    TRUTH_SUBDIR,
    annotations_folder,
    audio_folder,
    generator_path,
    is_synthetic_audio_name,
    partial_path,
    ratings_path,
    synthetic_audio_path,
)
from mer_lib.data.loader import MIN_AUDIO_SECONDS
from mer_lib.data.synth.model import (
    CONTROL_LOADINGS,
    CONTROL_SPREAD,
    CONTROLS,
    DISCRETE_EMOTIONS,
    DURATION_JITTER,
    EMOTION_LINKS,
    EMOTION_RATING,
    GENERATOR_VERSION,
    LABEL_STREAM,
    LATENT_FACTORS,
    OTHER_SHARE,
    OTHER_SOURCES,
    RATER_NOISE_SD,
    check_count,
    check_sample_rate,
    check_seed,
    control_correlation,
    control_sd,
    correlation_table,
    emotion_weights,
    excerpt_plan,
    excerpt_rng,
    make_annotations,
    sample_controls,
)
from mer_lib.data.synth.render import render_excerpt
from mer_lib.errors import MerError
from mer_lib.progress import progress_bar


# --------------------------------------------------------------------------- file formats (pure)
def _wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _ratings_text(emotions: pd.DataFrame) -> str:
    """``mean_ratings_set1.csv``: zero-padded numbers, 2 decimals, TARGET."""
    lines = [",".join(["number", *EMOTIONS, "TARGET"])]
    for number, row in emotions.iterrows():
        target = max(DISCRETE_EMOTIONS, key=lambda e: row[e]).upper()  # first wins ties
        lines.append(",".join([f"{number:03d}", *(f"{row[e]:.2f}" for e in EMOTIONS), target]))
    return "\n".join(lines) + "\n"


def _metadata_texts(midlevel: pd.DataFrame, seed: int) -> tuple[str, str]:
    """``metadata.csv`` (';') and ``annotations.csv`` (','), shuffled so that only a join by song id (> 1000) works."""
    rng = excerpt_rng(seed, 0, LABEL_STREAM)  # number 0: the dataset-level stream
    n = len(midlevel)
    n_other = max(2, round(OTHER_SHARE * n))
    other = ndtr(CONTROL_SPREAD * rng.standard_normal((n_other, len(MIDLEVEL))))  # plausible, unused
    other_mid = np.round(np.clip(1 + 9 * other + RATER_NOISE_SD * rng.standard_normal(other.shape),
                                 *MIDLEVEL_RANGE), 3)
    rows = [(SOUNDTRACKS_SOURCE, int(k), "Synthetic ensemble", f"Cue {int(k):03d}", midlevel.loc[k].to_numpy())
            for k in midlevel.index]
    for j in range(n_other):
        source = OTHER_SOURCES[j % len(OTHER_SOURCES)]
        ext_id = int(rng.integers(10_000, 999_999))
        rows.append((source, ext_id, f"Synthetic artist {j + 1}", f"Track {ext_id}", other_mid[j]))
    base = 1000 if len(rows) < 1000 else 10 ** len(str(len(rows)))
    order = rng.permutation(len(rows))
    song_of = {int(r): base + 1 + i for i, r in enumerate(order)}
    meta = ["song id;Source;ID at file source;Artist;Title"]
    for i in order:
        source, ext_id, artist, title, _ = rows[i]
        meta.append(f"{song_of[int(i)]};{source};{ext_id};{artist};{title}")
    ann = ["song_id, " + ", ".join(MIDLEVEL)]
    for i in rng.permutation(len(rows)):
        ann.append(",".join([str(song_of[int(i)]), *(f"{v:.3f}" for v in rows[i][4])]))
    return "\n".join(meta) + "\n", "\n".join(ann) + "\n"


def _controls_text(controls: pd.DataFrame, plans: dict[int, tuple[float, int]]) -> str:
    lines = [",".join(["number", *CONTROLS, "duration_s", "render_seed"])]
    for number, row in controls.iterrows():
        duration, render_seed = plans[int(number)]
        lines.append(",".join([f"{number:03d}", *(f"{row[c]:.6f}" for c in CONTROLS),
                               f"{duration:.3f}", str(render_seed)]))
    return "\n".join(lines) + "\n"


def _generator_config(n_excerpts: int, duration_s: float, seed: int, sample_rate: int) -> dict[str, Any]:
    """Everything the dataset's bytes depend on (hashed into ``config_hash``)."""
    return {
        # "mer_lib.synth": the generator's fixed name in the marker; changing it would invalidate the config
        # hash of every existing dataset
        "generator": "mer_lib.synth", "version": GENERATOR_VERSION,
        "n_excerpts": n_excerpts, "duration_s": duration_s, "seed": seed, "sample_rate": sample_rate,
        "model": {
            "control_loadings": {c: list(v) for c, v in CONTROL_LOADINGS.items()},
            "latent_factors": list(LATENT_FACTORS), "control_spread": CONTROL_SPREAD,
            "rater_noise_sd": RATER_NOISE_SD, "duration_jitter": DURATION_JITTER,
            "emotion_links": EMOTION_LINKS,
            "emotion_rating": {e: dict(zip(("r2", "loc", "scale"), v)) for e, v in EMOTION_RATING.items()},
            "other_sources": list(OTHER_SOURCES), "other_share": OTHER_SHARE,
        },
    }


def _texts(controls: pd.DataFrame, plans: dict[int, tuple[float, int]], seed: int) -> dict[str, str]:
    midlevel, emotions = make_annotations(controls, seed)
    metadata, annotations = _metadata_texts(midlevel, seed)
    return {
        RATINGS_FILE: _ratings_text(emotions),
        METADATA_RELPATH: metadata,
        ANNOTATIONS_RELPATH: annotations,
        CONTROLS_RELPATH: _controls_text(controls, plans),
    }


def _render_file(out: Path, number: int, controls: pd.DataFrame, plans: dict[int, tuple[float, int]],
                 sample_rate: int) -> Path:
    duration, render_seed = plans[number]
    audio = render_excerpt(controls.loc[number], duration, sample_rate, render_seed)
    return write_bytes(out / synthetic_audio_path(number), _wav_bytes(audio, sample_rate))


def _render_all(out: Path, numbers: list[int], controls: pd.DataFrame, plans: dict[int, tuple[float, int]],
                sample_rate: int, workers: int) -> Iterator[tuple[int, Path]]:
    """Render ``numbers`` in order, ``workers`` at a time (threads: numpy and scipy release the GIL)."""
    render = partial(_render_file, out, controls=controls, plans=plans, sample_rate=sample_rate)
    if workers == 1:
        yield from zip(numbers, map(render, numbers))
        return
    with ThreadPoolExecutor(workers) as pool:
        yield from zip(numbers, pool.map(render, numbers))


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    diffs = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if k != "model" and old.get(k) != new[k]]
    if old.get("model") != new["model"]:
        diffs.append("model: the generator's fixed parameters changed")
    return diffs


def _read_marker(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
        return {"config": data["config"], "config_hash": data["config_hash"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MerError(f"{path}: unreadable generator record ({exc}); delete the folder "
                       f"{path.parent.parent} or pass overwrite=True") from None


# --------------------------------------------------------------------------- generation steps
def _check_parameters(n_excerpts: int, duration_s: float, seed: int, sample_rate: int,
                      workers: int | None) -> tuple[int, float, int, int, int]:
    """The validated parameters of :func:`generate_soundtracks`, as Python ints and floats."""
    seed = check_seed(seed)
    n_excerpts = check_count(n_excerpts, "n_excerpts")
    shortest = MIN_AUDIO_SECONDS / (1.0 - DURATION_JITTER)  # the loader refuses shorter files
    if not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s < shortest:
        raise MerError(f"duration_s must be a number >= {shortest:.3f} seconds (excerpts vary by "
                       f"±{DURATION_JITTER:.0%} and audio shorter than {MIN_AUDIO_SECONDS:g} s is refused), "
                       f"got {duration_s!r}")
    sample_rate = check_sample_rate(sample_rate)
    workers = check_count(min(2, os.cpu_count() or 1) if workers is None else workers, "workers")
    return n_excerpts, float(duration_s), seed, sample_rate, workers


def _refuse_foreign(out: Path) -> None:
    """Raise if ``out`` (holding no generator marker) holds parts of a dataset."""
    foreign = [p.name for p in (audio_folder(out), ratings_path(out), annotations_folder(out)) if p.exists()]
    if foreign:
        raise MerError(f"{out} already holds {', '.join(foreign)} not written by mer_lib.data.synth "
                       f"(no {TRUTH_SUBDIR}/{GENERATOR_FILE}); refusing to touch it, even with "
                       f"overwrite=True: choose an empty folder")


def _clear_other_config(out: Path, old: Mapping[str, Any], new: Mapping[str, Any], overwrite: bool) -> None:
    """Remove the marker and audio of a dataset of configuration ``old``, if ``overwrite``; else raise."""
    if not overwrite:
        diffs = "; ".join(_config_differences(old, new)) or "config hash"
        raise MerError(f"{out} holds a synthetic dataset of another configuration ({diffs}); "
                       f"use another folder or pass overwrite=True")
    generator_path(out).unlink(missing_ok=True)
    for wav in audio_folder(out).glob("*.wav"):
        if is_synthetic_audio_name(wav.name):
            wav.unlink()


def _claim_folder(out: Path, config: Mapping[str, Any], chash: str, overwrite: bool) -> bool:
    """Make ``out`` ready for the dataset of ``config`` (partial marker unless complete); whether it is complete."""
    if out.exists() and not out.is_dir():
        raise MerError(f"out_dir {out} exists and is not a folder")
    final, unfinished = generator_path(out), partial_path(out)
    marker = final if final.exists() else unfinished if unfinished.exists() else None
    if marker is None:
        _refuse_foreign(out)
    else:
        record = _read_marker(marker)
        if record["config_hash"] != chash:
            _clear_other_config(out, record["config"], config, overwrite)
    complete = final.exists()  # only if the hash matched
    if not complete:
        write_json(unfinished, {"config": config, "config_hash": chash})
    return complete


def _render_missing(out: Path, controls: pd.DataFrame, plans: dict[int, tuple[float, int]], sample_rate: int,
                    workers: int, manifest: Mapping[str, str], progress: bool) -> None:
    """Render the excerpts without a WAV file; check those listed in ``manifest`` against its checksums."""
    todo = [k for k in plans if not (out / synthetic_audio_path(k)).exists()]
    bar = progress_bar(_render_all(out, todo, controls, plans, sample_rate, workers), total=len(todo),
                       desc="synthetic Soundtracks", unit="excerpt", enabled=progress and bool(todo))
    for number, path in bar:
        expected = manifest.get(synthetic_audio_path(number))
        if expected is not None and file_sha256(path) != expected:
            raise MerError(f"{path}: the regenerated audio differs from its checksum in {generator_path(out)} "
                           f"(this platform's numerics differ from the original run's); delete the "
                           f"folder {out} and generate the whole dataset again")


def _write_texts(out: Path, controls: pd.DataFrame, plans: dict[int, tuple[float, int]], seed: int,
                 complete: bool) -> None:
    """Write the text files: all of them, unless the dataset is complete (then only the missing ones)."""
    missing_texts = [name for name in TEXT_FILES if not (complete and (out / name).exists())]
    if missing_texts:  # cheap: all of them are rewritten unless the dataset is complete
        texts = _texts(controls, plans, seed)
        for name in missing_texts:
            write_text(out / name, texts[name])


def _write_generator_record(out: Path, config: dict[str, Any], chash: str, controls: pd.DataFrame,
                            seed: int) -> None:
    """Write ``generator.json`` (configuration, model, checksums of every file), then drop the partial marker."""
    midlevel, emotions = make_annotations(controls, seed)
    files = sorted([synthetic_audio_path(k) for k in controls.index] + list(TEXT_FILES))
    table = correlation_table(midlevel, emotions)
    write_json(generator_path(out), {
        "config": config, "config_hash": chash,
        "emotion_weights": emotion_weights().round(6).to_dict(orient="index"),
        "control_sd": control_sd(),
        "control_correlation": control_correlation().round(6).to_dict(orient="index"),
        "correlations": [{"emotion": e, "feature": f, "real": row.real,
                          "synthetic": None if math.isnan(row.synthetic) else row.synthetic}
                         for (e, f), row in table.iterrows()],
        "files": {name: file_sha256(out / name) for name in files},
    })
    partial_path(out).unlink(missing_ok=True)


def generate_soundtracks(out_dir: str | Path, n_excerpts: int = 360, duration_s: float = 12.0, seed: int = 2025,
                         sample_rate: int = SAMPLE_RATE, overwrite: bool = False, progress: bool = True,
                         workers: int | None = None) -> Path:
    """Write the synthetic dataset (protocol §2.2) of ``n_excerpts`` excerpts to ``out_dir``; return ``out_dir``.

    Renders every excerpt (:func:`mer_lib.data.synth.render.render_excerpt`) to 16-bit WAV at ``sample_rate``, then
    writes the ratings, metadata and annotation CSVs, the ground-truth controls and, last, ``generator.json``.
    Resumable: ``generator.partial.json`` is written first, and a rerun with the same configuration only writes the
    missing files, each atomically.

    Parameters
    ----------
    duration_s : float
        Mean excerpt length in seconds; each excerpt lasts ``duration_s * U(0.9, 1.1)``.
    overwrite : bool
        Replace a synthetic dataset of another configuration; a dataset not written by this module is never touched.
    workers : int, optional
        Rendering threads (default 2, or 1 on a single core); the files do not depend on it.

    Raises
    ------
    MerError
        On bad parameters, on a folder holding another configuration (naming the differences) unless ``overwrite``,
        or on a folder holding a dataset not written by this generator.
    """
    n_excerpts, duration_s, seed, sample_rate, workers = _check_parameters(n_excerpts, duration_s, seed,
                                                                            sample_rate, workers)
    out = Path(out_dir)
    config = _generator_config(n_excerpts, duration_s, seed, sample_rate)
    chash = config_hash(config)
    complete = _claim_folder(out, config, chash, overwrite)
    controls = sample_controls(n_excerpts, seed)
    plans = {k: excerpt_plan(k, seed, duration_s) for k in range(1, n_excerpts + 1)}
    manifest = read_json(generator_path(out))["files"] if complete else {}
    _render_missing(out, controls, plans, sample_rate, workers, manifest, progress)
    _write_texts(out, controls, plans, seed, complete)
    if complete:
        partial_path(out).unlink(missing_ok=True)  # left behind if a run stopped right after generator.json
    else:
        _write_generator_record(out, config, chash, controls, seed)
    return out
