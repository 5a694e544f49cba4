"""Spectrogram cache, standardisation statistics and excerpts."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mer_lib import artifacts
from mer_lib.config import FeatureConfig
from mer_lib.data.cache import (
    cache_spectrograms,
    cut_excerpt,
    excerpt_offsets,
    prepare_cache,
    spectrogram_digest,
    spectrogram_record,
    standardisation_stats,
)
from mer_lib.data.frontend import spectrogram_from_file
from mer_lib.data.split import split_numbers
from mer_lib.errors import MerError

FEAT = FeatureConfig(excerpt_frames=40)


@pytest.fixture()
def table(tmp_path):
    rng = np.random.default_rng(0)
    rows = {}
    for n in range(1, 11):
        seconds = 0.8 + 0.2 * n  # 1.0 .. 2.8 s: 32 .. 88 frames; some shorter than 40 frames
        x = 0.3 * rng.standard_normal(int(seconds * 22050))
        path = tmp_path / "audio" / f"{n:03d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, x, 22050, subtype="PCM_16")
        rows[n] = {"audio_path": str(path), "valence": 0.5}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("number")


def test_offsets_are_seeded_and_bounded():
    frames = {3: 100, 1: 30, 2: 313}
    a = excerpt_offsets(frames, 40, seed=42)
    assert a == excerpt_offsets(dict(sorted(frames.items())), 40, seed=42)
    assert a[1] == 0 and 0 <= a[3] <= 60 and 0 <= a[2] <= 273
    assert excerpt_offsets({n: 10_000 for n in range(50)}, 40, 42) != excerpt_offsets(
        {n: 10_000 for n in range(50)}, 40, 43)


def test_cut_excerpt_wraps_short_files():
    spec = np.arange(5)[:, None] * np.ones((1, 3))
    np.testing.assert_array_equal(cut_excerpt(spec, 0, 12)[:, 0], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_array_equal(cut_excerpt(spec, 2, 3)[:, 0], [2, 3, 4])


def test_standardisation_stats_match_numpy():
    rng = np.random.default_rng(1)
    specs = [rng.random((n, 7)).astype(np.float32) for n in (3, 10, 21)]
    mean, std = standardisation_stats(specs)
    flat = np.concatenate([s.ravel() for s in specs]).astype(np.float64)
    assert mean == pytest.approx(flat.mean(), rel=1e-12)
    assert std == pytest.approx(flat.std(), rel=1e-12)
    with pytest.raises(MerError):
        standardisation_stats([])


def test_cache_reuses_and_recomputes(table, tmp_path):
    cache = tmp_path / "cache"
    frames = cache_spectrograms(table, cache, FEAT, progress=False)
    spec_files = sorted((cache / "spectrograms").glob("*.npy"))
    assert len(spec_files) == 10 and frames[1] == int(np.ceil(1.0 * 22050 / (22050 / 31.3)))
    np.testing.assert_array_equal(artifacts.read_npy(spec_files[0]),
                                  spectrogram_from_file(table.at[1, "audio_path"]))
    mtimes = {p.name: p.stat().st_mtime_ns for p in spec_files}
    # rerun: nothing recomputed
    cache_spectrograms(table, cache, FEAT, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in spec_files} == mtimes
    # changed audio: only that file is recomputed
    sf.write(table.at[4, "audio_path"], 0.1 * np.ones(30000) * np.sin(np.arange(30000)), 22050,
             subtype="PCM_16")
    cache_spectrograms(table, cache, FEAT, progress=False)
    changed = [p.name for p in spec_files if p.stat().st_mtime_ns != mtimes[p.name]]
    assert changed == ["004.npy"]
    # a lost file (interrupted run) is recomputed
    os.remove(spec_files[1])
    cache_spectrograms(table, cache, FEAT, progress=False)
    assert spec_files[1].exists()
    # a front-end change recomputes everything
    mtimes = {p.name: p.stat().st_mtime_ns for p in spec_files}
    cache_spectrograms(table, cache, dataclasses.replace(FEAT, fmax=8000.0), progress=False)
    assert all(p.stat().st_mtime_ns != mtimes[p.name] for p in spec_files)
    assert not list(cache.rglob("*.tmp"))


def test_prepare_cache_excerpts_and_stats(table, tmp_path):
    split = split_numbers(table.index.to_numpy())
    prep = prepare_cache(table, split, tmp_path / "cache", FEAT, progress=False)
    x = prep.excerpts()
    assert x.shape == (10, 1, 40, 149) and x.dtype == np.float32
    specs = [prep.spectrogram(n) for n in table.index]
    mean, std = standardisation_stats(specs)
    assert prep.mean == pytest.approx(mean) and prep.std == pytest.approx(std)
    raw = prep.excerpts(standardize=False)
    np.testing.assert_allclose(x, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    assert list(prep.numbers("test")) == list(split["test"])
    assert set(prep.table["split"]) == {"train", "valid", "test"}
    # training-split statistics are an option, and differ
    train_only = prepare_cache(table, split, tmp_path / "cache",
                               dataclasses.replace(FEAT, stats_split="train"), progress=False)
    assert train_only.mean != prep.mean
    with pytest.raises(MerError, match="stats_split"):
        prepare_cache(table, split, tmp_path / "cache", dataclasses.replace(FEAT, stats_split="test"))


# --------------------------------------------------------------------------- damaged cache files
def _spectrogram_bytes(cache):
    return {p.name: p.read_bytes() for p in sorted((cache / "spectrograms").glob("*.npy"))}


def test_manifest_records_every_spectrogram(table, tmp_path):
    cache, table = tmp_path / "cache", table.iloc[:3]
    cache_spectrograms(table, cache, FEAT, progress=False)
    manifest = artifacts.read_json(cache / "manifest.json")
    for name, entry in manifest["files"].items():
        assert spectrogram_record(entry) == artifacts.file_record(cache / "spectrograms" / f"{name}.npy")
    digest = spectrogram_digest(manifest)
    manifest["files"]["002"]["spectrogram_sha256"] = "0" * 64
    assert spectrogram_digest(manifest) != digest and len(digest) == 64


@pytest.mark.parametrize("damage", ["same-size", "truncated"])
def test_a_damaged_spectrogram_is_recomputed_with_a_warning(table, tmp_path, damage):
    cache = tmp_path / "cache"
    split = split_numbers(table.index.to_numpy())
    clean = prepare_cache(table, split, cache, FEAT, progress=False)
    good = _spectrogram_bytes(cache)
    path = cache / "spectrograms" / "002.npy"
    data = bytearray(path.read_bytes())
    if damage == "same-size":
        data[-400:] = bytes(400)  # values zeroed: still a valid .npy of the same size
        path.write_bytes(bytes(data))
        assert artifacts.read_npy(path).shape == artifacts.read_npy_bytes(good["002.npy"], path).shape
    else:
        path.write_bytes(bytes(data[:-1000]))
    with pytest.warns(UserWarning, match=rf"{path}: damaged cached spectrogram \(its size or SHA-256 differs from "
                                         rf"its record in {cache / 'manifest.json'}\); recomputing it"):
        again = prepare_cache(table, split, cache, FEAT, progress=False)
    assert _spectrogram_bytes(cache) == good
    assert (again.mean, again.std) == (clean.mean, clean.std)
    np.testing.assert_array_equal(again.excerpts(), clean.excerpts())


def test_a_spectrogram_damaged_after_the_check_is_never_used(table, tmp_path):
    cache = tmp_path / "cache"
    prep = prepare_cache(table, split_numbers(table.index.to_numpy()), cache, FEAT, progress=False)
    path = cache / "spectrograms" / "003.npy"
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x00\xc0\x7f"  # one value becomes NaN; same size
    path.write_bytes(bytes(data))
    with pytest.raises(MerError, match=rf"{path}: the cached spectrogram changed after it was checked .*"
                                       r"rerun prepare_data"):
        prep.excerpts()
    path.unlink()
    with pytest.raises(MerError, match=rf"{path}: cannot read the cached spectrogram"):
        prep.spectrogram(3)


@pytest.mark.parametrize("name", ["manifest.json", "stats.json", "offsets.json"])
def test_a_damaged_cache_record_is_recomputed_with_a_warning(table, tmp_path, name):
    cache = tmp_path / "cache"
    split = split_numbers(table.index.to_numpy())
    clean = prepare_cache(table, split, cache, FEAT, progress=False)
    good = {p.name: p.read_bytes() for p in cache.glob("*.json")}
    spectrograms = _spectrogram_bytes(cache)
    path = cache / name
    path.write_bytes(path.read_bytes()[:30])
    with pytest.warns(UserWarning, match=rf"{path}: damaged JSON file \(.*\); recomputing"):
        again = prepare_cache(table, split, cache, FEAT, progress=False)
    assert {p.name: p.read_bytes() for p in cache.glob("*.json")} == good
    assert _spectrogram_bytes(cache) == spectrograms
    assert (again.mean, again.std) == (clean.mean, clean.std)
    assert again.table["offset"].tolist() == clean.table["offset"].tolist()
    path.write_text('["valid JSON, wrong content"]\n')
    with pytest.warns(UserWarning, match=rf"{path}: damaged \(expected a JSON object with .*\); recomputing"):
        prepare_cache(table, split, cache, FEAT, progress=False)
    assert path.read_bytes() == good[name]


def test_unrecorded_spectrograms_are_recomputed_and_recorded(table, tmp_path, recwarn):
    cache, table = tmp_path / "cache", table.iloc[:3]
    cache_spectrograms(table, cache, FEAT, progress=False)
    manifest = artifacts.read_json(cache / "manifest.json")
    for entry in manifest["files"].values():  # a cache written before spectrograms were recorded
        del entry["spectrogram_size"], entry["spectrogram_sha256"]
    artifacts.write_json(cache / "manifest.json", manifest)
    cache_spectrograms(table, cache, FEAT, progress=False)
    assert not recwarn.list  # nothing was damaged
    entries = artifacts.read_json(cache / "manifest.json")["files"].values()
    assert all(spectrogram_record(e)["sha256"] is not None for e in entries)


def test_the_cache_removes_the_temp_files_of_killed_writes(table, tmp_path):
    cache, table = tmp_path / "cache", table.iloc[:3]
    cache_spectrograms(table, cache, FEAT, progress=False)
    stale = [cache / ".manifest.json.4194305-a1b2c3d4.tmp", cache / "spectrograms" / ".002.npy.4194305-x_y_z_12.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (cache / "spectrograms" / "keep.tmp").write_bytes(b"not ours")
    cache_spectrograms(table, cache, FEAT, progress=False)
    assert not any(p.exists() for p in stale) and (cache / "spectrograms" / "keep.tmp").exists()
