"""Tests of mer_lib.data.synth.writer: the synthetic dataset on disk.

Covers the on-disk formats (protocol §2.1), reading them back with the
project's loader, and the determinism and resumability of
:func:`generate_soundtracks`.
"""
from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from synth_fixtures import SR

from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.data.loader import load_soundtracks
from mer_lib.data.synth import model as synth_model
from mer_lib.data.synth import render, writer
from mer_lib.errors import MerError

TINY = dict(n_excerpts=5, duration_s=2.0, seed=7, sample_rate=SR, progress=False)


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A moderately sized dataset (80 short excerpts)."""
    return writer.generate_soundtracks(tmp_path_factory.mktemp("synth") / "data", n_excerpts=80,
                                      duration_s=1.5, seed=11, progress=False)


# --------------------------------------------------------------------------- formats
def test_ratings_csv_format(dataset: Path) -> None:
    raw = (dataset / "mean_ratings_set1.csv").read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8").splitlines()
    assert lines[0] == "number,valence,energy,tension,anger,fear,happy,sad,tender,TARGET"
    rows = list(csv.reader(lines[1:]))
    assert [r[0] for r in rows] == [f"{k:03d}" for k in range(1, 81)]
    for row in rows:
        assert len(row) == 10
        assert all(re.fullmatch(r"\d\.\d\d", v) for v in row[1:9]), row
        assert all(1.0 <= float(v) <= 9.0 for v in row[1:9])
        assert row[9] in {"ANGER", "FEAR", "HAPPY", "SAD", "TENDER"}
    df = pd.read_csv(dataset / "mean_ratings_set1.csv", dtype={"number": str})
    discrete = df[["anger", "fear", "happy", "sad", "tender"]]
    floor_share = (discrete == 1.0).mean()
    assert floor_share.between(0.3, 0.7).all(), floor_share  # about half at the floor
    assert 0.4 <= floor_share.mean() <= 0.6
    assert (df[["valence", "energy", "tension"]] == 1.0).mean().max() < 0.15


def test_metadata_and_annotations_format(dataset: Path) -> None:
    folder = dataset / "metadata_annotations"
    meta = pd.read_csv(folder / "metadata.csv", sep=";")
    assert list(meta.columns)[:3] == ["song id", "Source", "ID at file source"]
    sound = meta[meta["Source"] == "soundtracks"]
    assert sorted(sound["ID at file source"].astype(int)) == list(range(1, 81))
    assert len(meta) - len(sound) >= 8 and set(meta["Source"]) >= {"jamendo", "magnatagatune"}
    assert meta["song id"].min() > 1000 and meta["song id"].is_unique
    assert list(sound["ID at file source"]) != sorted(sound["ID at file source"])  # not in row order
    assert list(meta["song id"]) == sorted(meta["song id"])

    header = (folder / "annotations.csv").read_text().splitlines()[0]
    assert header == "song_id, " + ", ".join(MIDLEVEL)
    ann = pd.read_csv(folder / "annotations.csv", skipinitialspace=True)
    assert list(ann.columns) == ["song_id", *MIDLEVEL]
    assert set(ann["song_id"]) == set(meta["song id"])
    assert list(ann["song_id"]) != list(meta["song id"])
    values = ann[list(MIDLEVEL)].to_numpy()
    assert values.min() >= 1.0 and values.max() <= 10.0 and values.std() > 1.0


def test_audio_and_ground_truth_files(dataset: Path) -> None:
    wavs = sorted((dataset / "Set1").iterdir())
    assert [p.name for p in wavs] == [f"{k:03d}.wav" for k in range(1, 81)]
    controls = pd.read_csv(dataset / "synthetic" / "controls.csv", index_col="number")
    assert list(controls.columns) == [*synth_model.CONTROLS, "duration_s", "render_seed"]
    for k in (1, 40, 80):
        info = sf.info(wavs[k - 1])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
        assert info.frames == round(controls.loc[k, "duration_s"] * SR)
    assert controls["duration_s"].between(1.35, 1.65).all() and controls["duration_s"].nunique() > 40
    # the ground truth reproduces the audio
    row = controls.loc[7]
    audio = render.render_excerpt(row[list(synth_model.CONTROLS)].to_dict(), float(row["duration_s"]), SR,
                                 int(row["render_seed"]))
    written, _ = sf.read(wavs[6], dtype="float32")
    assert np.max(np.abs(written - audio)) < 1.0 / 32767 + 1e-6
    record = json.loads((dataset / "synthetic" / "generator.json").read_text())
    assert record["config"]["seed"] == 11 and record["config"]["n_excerpts"] == 80
    assert set(record["emotion_weights"]) == set(EMOTIONS)
    assert len(record["files"]) == 84 and len(record["config_hash"]) == 12
    assert not (dataset / "synthetic" / "generator.partial.json").exists()


def test_loads_through_project_loader(dataset: Path) -> None:
    df = load_soundtracks(dataset)
    assert list(df.index) == list(range(1, 81))
    ratings = pd.read_csv(dataset / "mean_ratings_set1.csv", index_col="number")
    np.testing.assert_allclose(df[list(EMOTIONS)].to_numpy(), ratings[list(EMOTIONS)].to_numpy() / 10)
    mid, _ = synth_model.make_annotations(synth_model.sample_controls(80, 11), 11)
    np.testing.assert_allclose(df[list(MIDLEVEL)].to_numpy(), mid.to_numpy() / 10, atol=1e-9)
    assert all(Path(p).exists() for p in df["audio_path"])


# --------------------------------------------------------------------------- determinism, rerun
def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    a = all_files(writer.generate_soundtracks(tmp_path / "a", **TINY))
    b = all_files(writer.generate_soundtracks(tmp_path / "b", **TINY, workers=1))  # a: 2 threads
    assert a.keys() == b.keys() and len(a) == 5 + 5
    assert all(a[k] == b[k] for k in a)
    c = all_files(writer.generate_soundtracks(tmp_path / "c", **{**TINY, "seed": 8}))
    assert all(a[f"Set1/{k:03d}.wav"] != c[f"Set1/{k:03d}.wav"] for k in range(1, 6))
    # excerpts are independent: the first 3 of a set of 5 equal a set of 3
    d = all_files(writer.generate_soundtracks(tmp_path / "d", **{**TINY, "n_excerpts": 3}))
    assert all(d[f"Set1/{k:03d}.wav"] == a[f"Set1/{k:03d}.wav"] for k in range(1, 4))


def test_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(MerError, match="workers must be a positive integer"):
        writer.generate_soundtracks(tmp_path / "w", **TINY, workers=0)


def test_rerun_skips_and_config_change_is_refused(tmp_path: Path) -> None:
    out = writer.generate_soundtracks(tmp_path / "d", **TINY)
    before = mtimes(out)
    time.sleep(0.01)
    assert writer.generate_soundtracks(out, **TINY) == out
    assert mtimes(out) == before  # nothing rewritten

    with pytest.raises(MerError, match=r"(?s)another configuration.*n_excerpts: 5 -> 4.*overwrite=True") as err:
        writer.generate_soundtracks(out, **{**TINY, "n_excerpts": 4})
    assert str(out) in str(err.value)
    with pytest.raises(MerError, match="duration_s: 2.0 -> 2.5"):
        writer.generate_soundtracks(out, **{**TINY, "duration_s": 2.5})
    assert mtimes(out) == before

    changed = {**TINY, "n_excerpts": 4, "seed": 9}
    writer.generate_soundtracks(out, **changed, overwrite=True)
    record = json.loads((out / "synthetic" / "generator.json").read_text())
    assert (record["config"]["n_excerpts"], record["config"]["seed"]) == (4, 9)
    assert all_files(out) == all_files(writer.generate_soundtracks(tmp_path / "clean", **changed))


def test_deleted_files_are_regenerated_identically(tmp_path: Path) -> None:
    out = writer.generate_soundtracks(tmp_path / "d", **TINY)
    original = all_files(out)
    (out / "Set1" / "003.wav").unlink()
    (out / "metadata_annotations" / "annotations.csv").unlink()
    writer.generate_soundtracks(out, **TINY)
    assert all_files(out) == original


def test_regenerated_file_is_checked_against_the_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = writer.generate_soundtracks(tmp_path / "d", **TINY)
    (out / "Set1" / "002.wav").unlink()
    real = render.render_excerpt
    monkeypatch.setattr(writer, "render_excerpt", lambda *a, **k: real(*a, **k) * np.float32(0.5))
    with pytest.raises(MerError, match=r"002\.wav: the regenerated audio differs from its checksum"):
        writer.generate_soundtracks(out, **TINY)


def test_interrupted_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = writer._render_file

    def failing(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "_render_file", failing)
    with pytest.raises(KeyboardInterrupt):
        writer.generate_soundtracks(tmp_path / "d", **TINY)
    monkeypatch.undo()
    assert (tmp_path / "d" / "synthetic" / "generator.partial.json").exists()
    assert not (tmp_path / "d" / "synthetic" / "generator.json").exists()
    with pytest.raises(MerError, match="another configuration"):
        writer.generate_soundtracks(tmp_path / "d", **{**TINY, "seed": 1})
    done = writer.generate_soundtracks(tmp_path / "d", **TINY)
    clean = writer.generate_soundtracks(tmp_path / "clean", **TINY)
    assert all_files(done) == all_files(clean)


def test_foreign_dataset_is_never_touched(tmp_path: Path) -> None:
    (tmp_path / "real" / "Set1").mkdir(parents=True)
    (tmp_path / "real" / "mean_ratings_set1.csv").write_text("number,valence\n")
    for overwrite in (False, True):
        with pytest.raises(MerError, match="not written by mer_lib.data.synth"):
            writer.generate_soundtracks(tmp_path / "real", **TINY, overwrite=overwrite)
    assert (tmp_path / "real" / "mean_ratings_set1.csv").read_text() == "number,valence\n"


@pytest.mark.parametrize("kwargs, match", [
    ({"n_excerpts": 0}, "n_excerpts"), ({"duration_s": 0.2}, "duration_s"),
    ({"seed": -1}, "seed"), ({"sample_rate": 100}, "sample_rate"),
])
def test_bad_parameters(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MerError, match=match):
        writer.generate_soundtracks(tmp_path / "x", **{**TINY, **kwargs})


def test_progress_is_one_line_in_saved_notebooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MER_PROGRESS", "line")
    writer.generate_soundtracks(tmp_path / "d", **{**TINY, "progress": True})
    assert re.fullmatch(r"synthetic Soundtracks: 5/5 excerpt in \S+\n", capsys.readouterr().out)
    writer.generate_soundtracks(tmp_path / "d", **{**TINY, "progress": True})  # nothing to render: no bar
    assert capsys.readouterr().out == ""


def test_duration_too_short_for_the_loader_is_refused(tmp_path):
    """Excerpts vary by ±10 %; the loader refuses audio under 1 s, so the generator refuses such durations."""
    with pytest.raises(MerError, match=r"duration_s must be a number >= 1\.111 seconds"):
        writer.generate_soundtracks(tmp_path / "d", n_excerpts=2, duration_s=1.0)
