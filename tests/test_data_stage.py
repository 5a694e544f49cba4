"""prepare_data / dataset_dir: a small synthetic run prepared once, then reused without recomputation."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL, get_profile
from mer_lib.data import describe
from mer_lib.data.cache import PreparedData
from mer_lib.data.stage import dataset_dir, prepare_data, published_comparability
from mer_lib.errors import MerError

SMOKE = get_profile("smoke")
PAPER = get_profile("paper")
#: The smoke profile with 8 excerpts (6 train, 1 valid, 1 test): a few seconds to generate and prepare.
TINY = dataclasses.replace(SMOKE, data=dataclasses.replace(SMOKE.data, n_excerpts=8))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (inode, mtime_ns)`` of every file (an atomic rewrite changes both)."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, PreparedData, dict]:
    run_dir = tmp_path_factory.mktemp("stage") / "run"
    prepared = prepare_data(TINY, run_dir, progress=False)
    return run_dir, prepared, snapshot(run_dir)


# --------------------------------------------------------------------------- dataset_dir
def test_dataset_dir_synthetic_lives_in_the_run_dir(tmp_path):
    assert dataset_dir(SMOKE, tmp_path / "r", None) == (tmp_path / "r").resolve() / "data" / "soundtracks_synthetic"
    assert dataset_dir(SMOKE, "relative/run", "") == Path("relative/run").resolve() / "data" / "soundtracks_synthetic"


def test_dataset_dir_given_data_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dataset_dir(SMOKE, tmp_path / "r", "~/soundtracks") == (tmp_path / "soundtracks").resolve()
    assert dataset_dir(get_profile("paper"), tmp_path / "r", tmp_path / "d" / ".." / "e") == (tmp_path / "e")


def test_dataset_dir_real_profile_needs_a_data_dir(tmp_path):
    with pytest.raises(MerError, match="profile 'paper' reads the real datasets: pass data_dir="):
        dataset_dir(get_profile("paper"), tmp_path, None)


# --------------------------------------------------------------------------- prepare_data
def test_prepare_data_writes_the_run_layout(run):
    run_dir, prepared, files = run
    assert isinstance(prepared, PreparedData)
    data = run_dir.resolve() / "data"
    for name in ("dataset.csv", "cache/manifest.json", "cache/stats.json", "cache/offsets.json",
                 "soundtracks_synthetic/mean_ratings_set1.csv"):
        assert f"data/{name}" in files, name
    assert prepared.cache_dir == data / "cache"
    assert sorted(p.name for p in (data / "cache" / "spectrograms").iterdir()) == [f"{n:03d}.npy" for n in range(1, 9)]
    assert not [f for f in files if f.endswith(".tmp")]
    assert (data / "dataset.csv").read_text() == prepared.table.to_csv(float_format="%.6g")


def test_prepare_data_table_split_and_statistics(run):
    _, prepared, _ = run
    table = prepared.table
    assert table.index.tolist() == list(range(1, 9)) and table.index.name == "number"
    assert {*EMOTIONS, *MIDLEVEL, "audio_path", "split", "split_position", "frames", "offset"} <= set(table.columns)
    assert table["split"].value_counts().to_dict() == {"train": 6, "valid": 1, "test": 1}
    assert sorted(np.concatenate([prepared.numbers(s) for s in ("train", "valid", "test")])) == list(range(1, 9))
    assert table[list(EMOTIONS) + list(MIDLEVEL)].le(1.0).all().all()  # divided by 10
    assert prepared.excerpt_frames == TINY.features.excerpt_frames
    stats = artifacts.read_json(prepared.cache_dir / "stats.json")
    assert (prepared.mean, prepared.std) == (stats["mean"], stats["std"]) and stats["n_files"] == 8
    x = prepared.excerpts(prepared.numbers("test"))
    assert x.shape == (1, 1, TINY.features.excerpt_frames, 149) and x.dtype == np.float32


def test_second_call_reuses_everything(run):
    run_dir, prepared, files = run
    again = prepare_data(TINY, run_dir, progress=False)
    assert snapshot(run_dir) == files  # not one file rewritten
    pd.testing.assert_frame_equal(again.table, prepared.table)
    assert (again.mean, again.std, again.cache_dir) == (prepared.mean, prepared.std, prepared.cache_dir)


def test_given_data_dir_is_read_not_generated(run, tmp_path):
    run_dir, prepared, files = run
    source = run_dir / "data" / "soundtracks_synthetic"
    other = prepare_data("smoke", tmp_path / "other", data_dir=source, progress=False)
    assert not (tmp_path / "other" / "data" / "soundtracks_synthetic").exists()
    assert (tmp_path / "other" / "data" / "cache" / "manifest.json").exists()
    pd.testing.assert_frame_equal(other.table, prepared.table)
    assert (other.mean, other.std) == (prepared.mean, prepared.std)
    assert snapshot(run_dir) == files


def test_a_config_change_recomputes_only_what_it_invalidates(run, tmp_path):
    run_dir, prepared, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    before = snapshot(copy)
    features = dataclasses.replace(TINY.features, offset_seed=7, stats_split="train")
    changed = prepare_data(dataclasses.replace(TINY, features=features), copy, progress=False)
    after = snapshot(copy)
    rewritten = sorted(f for f in after if after[f] != before.get(f))
    # the audio and its spectrograms are reused; offsets, statistics and the table are redone
    assert rewritten == ["data/cache/offsets.json", "data/cache/stats.json", "data/dataset.csv"]
    assert artifacts.read_json(copy / "data" / "cache" / "stats.json")["n_files"] == 6
    assert changed.mean != prepared.mean
    pd.testing.assert_frame_equal(changed.table.drop(columns=["audio_path", "offset"]),
                                  prepared.table.drop(columns=["audio_path", "offset"]))


def test_errors(run, tmp_path):
    run_dir, _, files = run
    with pytest.raises(MerError, match="unknown profile 'tiny'"):
        prepare_data("tiny", tmp_path, progress=False)
    with pytest.raises(MerError, match="profile 'paper' reads the real datasets"):
        prepare_data("paper", tmp_path / "real", progress=False)
    with pytest.raises(MerError, match=f"data directory not found: {tmp_path / 'missing'}"):
        prepare_data("paper", tmp_path / "real", data_dir=tmp_path / "missing", progress=False)
    bigger = dataclasses.replace(TINY, data=dataclasses.replace(TINY.data, n_excerpts=9))
    with pytest.raises(MerError):  # another synthetic configuration is never written over the existing one
        prepare_data(bigger, run_dir, progress=False)
    assert snapshot(run_dir) == files
    assert not (tmp_path / "real").exists()


# --------------------------------------------------------------------------- the published split
def test_only_real_data_with_the_papers_split_is_concerned(tmp_path):
    assert published_comparability(SMOKE, [1, 2], tmp_path) is None
    other_seed = dataclasses.replace(PAPER, split=dataclasses.replace(PAPER.split, seed=7))
    assert published_comparability(other_seed, [1, 2], tmp_path) is None
    assert published_comparability(PAPER, list(range(1, 361)), tmp_path) is True
    assert published_comparability(PAPER, list(range(1, 360)), tmp_path, allow_subset=True) is False


@pytest.mark.parametrize("numbers, expected", [
    ([n for n in range(1, 361) if n != 17], "found 359 rated excerpt(s); missing 1: 17. Restore"),
    (list(range(1, 31)), "found 30 rated excerpt(s); missing 330: 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, "
                         "... (320 more). Restore"),
    ([*range(1, 361), 361, 400], "found 362 rated excerpt(s); not Set-1 numbers: 361, 400. Restore"),
])
def test_paper_profile_refuses_another_set_of_excerpts(tmp_path, numbers, expected):
    with pytest.raises(MerError) as info:
        published_comparability(PAPER, numbers, tmp_path / "data")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'data'}: profile 'paper' needs exactly the 360 Soundtracks Set-1 "
                              "excerpts (numbers 1-360), because the published train/validation/test split")
    assert expected in message
    assert message.endswith("pass allow_subset=True to prepare_data to run on these excerpts anyway (the split "
                            "then differs and the results are not comparable with the published runs)")


def test_paper_profile_on_a_subset_with_unrated_audio(run, tmp_path):
    run_dir, prepared, files = run
    source = tmp_path / "data"
    shutil.copytree(run_dir / "data" / "soundtracks_synthetic", source)
    shutil.copy(source / "Set1" / "008.wav", source / "Set1" / "361.wav")  # audio without ratings
    other = tmp_path / "run"
    shutil.copytree(run_dir / "data" / "cache", other / "data" / "cache")  # same audio: reused
    with pytest.raises(MerError, match="found 8 rated excerpt"):
        prepare_data(PAPER, other, data_dir=source, progress=False)
    subset = prepare_data(PAPER, other, data_dir=source, progress=False, allow_subset=True)
    assert subset.comparable_with_published is False
    assert subset.unrated_audio == (str(source / "Set1" / "361.wav"),)
    notes = describe.dataset_notes(subset)
    assert notes["count"].tolist() == [1, int((prepared.table["frames"] < 313).sum()), 352]
    assert notes["files"].iloc[0] == "361.wav" and notes["files"].iloc[2].startswith("missing: 009, 010")
    # the option labels the run; it changes no prepared value
    pd.testing.assert_frame_equal(subset.table.drop(columns="audio_path"), prepared.table.drop(columns="audio_path"))
    assert (other / "data" / "dataset.csv").read_text() == subset.table.to_csv(float_format="%.6g")
    assert snapshot(run_dir) == files


def test_valid_synthetic_run_is_not_labelled(run):
    _, prepared, _ = run
    assert prepared.comparable_with_published is None and prepared.unrated_audio == ()
