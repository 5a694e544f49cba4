"""Tests of mer_lib.synth: the deterministic synthetic Soundtracks dataset.

Covers the on-disk formats (protocol §2.1), determinism and resumability of
:func:`generate_soundtracks`, the label statistics against the real data
(protocol §2.2), and that every control has an *audible* effect, measured with a
descriptor computed from the waveform alone.
"""
from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.data.synth import model as synth_model
from mer_lib.data.synth import render, score, writer
from mer_lib.errors import MerError

SR = 22050
TINY = dict(n_excerpts=5, duration_s=2.0, seed=7, sample_rate=SR, progress=False)
BASE = {c: 0.5 for c in synth_model.CONTROLS}


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
    from mer_lib.data.loader import load_soundtracks

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
        with pytest.raises(MerError, match="not written by mer_lib.synth"):
            writer.generate_soundtracks(tmp_path / "real", **TINY, overwrite=overwrite)
    assert (tmp_path / "real" / "mean_ratings_set1.csv").read_text() == "number,valence\n"


@pytest.mark.parametrize("kwargs, match", [
    ({"n_excerpts": 0}, "n_excerpts"), ({"duration_s": 0.2}, "duration_s"),
    ({"seed": -1}, "seed"), ({"sample_rate": 100}, "sample_rate"),
])
def test_bad_parameters(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(MerError, match=match):
        writer.generate_soundtracks(tmp_path / "x", **{**TINY, **kwargs})


def test_render_validates_controls() -> None:
    with pytest.raises(MerError, match="missing.*tempo"):
        render.render_excerpt({c: 0.5 for c in synth_model.CONTROLS if c != "tempo"}, 2.0)
    with pytest.raises(MerError, match="'dissonance'.*\\[0, 1\\]"):
        render.render_excerpt({**BASE, "dissonance": 1.5}, 2.0)
    with pytest.raises(MerError, match="duration_s"):
        render.render_excerpt(BASE, -1.0)


# --------------------------------------------------------------------------- controls and labels
def test_sample_controls() -> None:
    c = synth_model.sample_controls(400, 3)
    assert list(c.columns) == list(synth_model.CONTROLS) and c.index.name == "number"
    assert list(c.index) == list(range(1, 401))
    assert c.to_numpy().min() > 0 and c.to_numpy().max() < 1
    pd.testing.assert_frame_equal(synth_model.sample_controls(10, 3), c.iloc[:10])
    r = c.corr()
    assert r.loc["melodiousness", "dissonance"] < -0.5 and r.loc["melodiousness", "tonal_stability"] > 0.5
    expected = synth_model.control_correlation()
    assert np.abs(r.to_numpy() - expected.to_numpy()).max() < 0.2


def test_label_statistics_match_real_data() -> None:
    controls = synth_model.sample_controls(4000, 5)
    mid, emo = synth_model.make_annotations(controls, 5)
    assert mid.to_numpy().min() >= 1 and mid.to_numpy().max() <= 10
    for e in ("valence", "energy", "tension"):
        assert 3.9 <= emo[e].mean() <= 4.4 and 1.4 <= emo[e].std() <= 1.8, e
    floor = (emo[list(synth_model.DISCRETE_EMOTIONS)] == 1.0).mean()
    assert floor.between(0.42, 0.58).all(), floor
    table = synth_model.correlation_table(mid, emo)
    assert (table["difference"].abs() < 0.1).all(), table


def test_default_dataset_correlations_near_real() -> None:
    mid, emo = synth_model.make_annotations(synth_model.sample_controls(360, 2025), 2025)
    table = synth_model.correlation_table(mid, emo)
    assert (table["difference"].abs() < 0.15).all(), table


def test_nuisance_explains_a_minority_share() -> None:
    controls = synth_model.sample_controls(6000, 1)
    _, emo = synth_model.make_annotations(controls, 1)

    def r2(x: np.ndarray, y: np.ndarray) -> float:
        x = np.column_stack([np.ones(len(x)), x])
        residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        return 1 - residual.var() / y.var()

    mid, nuis = controls[list(MIDLEVEL)].to_numpy(), controls[list(synth_model.NUISANCE)].to_numpy()
    gains = {e: r2(np.hstack([mid, nuis]), emo[e].to_numpy()) - r2(mid, emo[e].to_numpy()) for e in EMOTIONS}
    for e in ("valence", "energy", "anger", "happy", "tender"):
        assert 0.03 < gains[e] < 0.3, gains
    assert all(g < 0.3 for g in gains.values())


def test_make_annotations_rejects_bad_controls() -> None:
    c = synth_model.sample_controls(3, 0)
    with pytest.raises(MerError, match="missing column.*tempo"):
        synth_model.make_annotations(c.drop(columns="tempo"), 0)
    with pytest.raises(MerError, match=r"\[0, 1\]"):
        synth_model.make_annotations(c.assign(tempo=2.0), 0)


# --------------------------------------------------------------------------- the audio
def test_render_excerpt_properties() -> None:
    y = render.render_excerpt(BASE, 3.0, SR, 1)
    assert y.dtype == np.float32 and y.shape == (3 * SR,)
    assert 0.5 < np.abs(y).max() <= 0.7 + 1e-6
    assert np.array_equal(y, render.render_excerpt(BASE, 3.0, SR, 1))
    assert not np.array_equal(y, render.render_excerpt(BASE, 3.0, SR, 2))
    frames = librosa.feature.rms(y=y, frame_length=2048, hop_length=2048)[0]
    assert frames.min() > 1e-3  # no silent stretch
    quantised = np.round(y * 32767)
    assert quantised[:5].any() and quantised[-5:].any()  # no run of exact zeros to trim


def test_melody_is_stepwise_when_melodious() -> None:
    def intervals(m: float) -> tuple[float, int]:
        steps, count = [], 0
        for seed in range(5):
            composed = score.compose({**BASE, "melodiousness": m}, 12.0, np.random.default_rng(seed))
            pitches = composed["melody"][2]
            steps += list(np.abs(np.diff(pitches)))
            count += len(pitches)
        return float(np.median(steps)), count

    (step_hi, n_hi), (step_lo, n_lo) = intervals(0.9), intervals(0.1)
    assert step_hi <= 2 and step_lo >= 5 and n_hi > 2 * n_lo


def _chroma_profile(y: np.ndarray) -> np.ndarray:
    """Energy per pitch class, MIDI 48-95, from a 3-bins-per-semitone CQT (centre bins)."""
    cqt = librosa.cqt(y, sr=SR, hop_length=1024, fmin=librosa.midi_to_hz(48) * 2 ** (-1 / 36),
                      n_bins=36 * 4, bins_per_octave=36)
    energy = (np.abs(cqt) ** 2).sum(axis=1).reshape(-1, 3)[:, 1]
    return energy.reshape(4, 12).sum(axis=0)


def lead_energy(y: np.ndarray) -> float:
    """Share of CQT energy in the lead register (MIDI 64-95) = presence of a melody."""
    c = np.abs(librosa.cqt(y, sr=SR, hop_length=512, fmin=librosa.midi_to_hz(36), n_bins=60)) ** 2
    return float(c[64 - 36:96 - 36].sum() / c.sum())


def duty_cycle(y: np.ndarray) -> float:
    """Share of 6-ms frames louder than half the surrounding second's maximum (legato ~1)."""
    from scipy.ndimage import maximum_filter1d

    env = librosa.feature.rms(y=y, frame_length=256, hop_length=128)[0]
    return float(np.mean(env > 0.5 * maximum_filter1d(env, size=SR // 128)))


def onset_rate(y: np.ndarray) -> float:
    """Detected onsets per second."""
    return len(librosa.onset.onset_detect(y=y, sr=SR, units="time")) / (len(y) / SR)


def pulse_clarity(y: np.ndarray) -> float:
    """Highest normalised autocorrelation of the onset envelope at lags 0.3-1.5 s."""
    o = librosa.onset.onset_strength(y=y, sr=SR, hop_length=512)
    o = o - o.mean()
    ac = np.correlate(o, o, "full")[len(o) - 1:]
    fps = SR / 512
    return float(ac[int(0.3 * fps):int(1.5 * fps)].max() / ac[0])


def roughness(y: np.ndarray) -> float:
    """Sensory roughness (Sethares 1993) of the 24 strongest spectral peaks per frame."""
    spec = np.abs(librosa.stft(y, n_fft=4096, hop_length=2048))
    freqs = librosa.fft_frequencies(sr=SR, n_fft=4096)
    total = 0.0
    for frame in spec.T:
        peaks = np.flatnonzero((frame[1:-1] > frame[:-2]) & (frame[1:-1] >= frame[2:])) + 1
        peaks = peaks[np.argsort(frame[peaks])[::-1][:24]]
        a, f = frame[peaks], freqs[peaks]
        s = 0.24 / (0.021 * np.minimum.outer(f, f) + 19)
        df = np.abs(np.subtract.outer(f, f))
        total += (np.outer(a, a) * (np.exp(-3.5 * s * df) - np.exp(-5.75 * s * df))).sum() / 2 / (a ** 2).sum()
    return total / spec.shape[1]


def diatonic_share(y: np.ndarray) -> float:
    """Share of pitch-class energy in the 7 strongest pitch classes (key clarity)."""
    p = np.sort(_chroma_profile(y))[::-1]
    return float(p[:7].sum() / p.sum())


_MAJOR_TRIAD, _MINOR_TRIAD = np.zeros(12), np.zeros(12)
_MAJOR_TRIAD[[0, 4, 7]] = _MINOR_TRIAD[[0, 3, 7]] = 1


def minor_chord_share(y: np.ndarray) -> float:
    """Share of frames whose chroma matches a minor triad better than any major triad."""
    chroma = librosa.feature.chroma_cqt(y=y, sr=SR, hop_length=2048, bins_per_octave=36, norm=2)
    minor = np.max([np.roll(_MINOR_TRIAD, r) @ chroma for r in range(12)], axis=0)
    major = np.max([np.roll(_MAJOR_TRIAD, r) @ chroma for r in range(12)], axis=0)
    return float(np.mean(minor > major))


def crest_loudness(y: np.ndarray) -> float:
    """RMS after peak normalisation (what survives the front end's norm=True)."""
    return float(np.sqrt(np.mean(y ** 2)) / np.abs(y).max())


def centroid(y: np.ndarray) -> float:
    return float(np.mean(librosa.feature.spectral_centroid(y=y, sr=SR)))


#: control -> (descriptor, sign of the effect of raising the control, minimum relative change)
AUDIBLE = {
    "melodiousness": (lead_energy, +1, 0.5),
    "articulation": (duty_cycle, -1, 0.4),
    "rhythm_complexity": (onset_rate, +1, 0.25),
    "rhythm_stability": (pulse_clarity, +1, 0.5),
    "dissonance": (roughness, +1, 0.3),
    "tonal_stability": (diatonic_share, +1, 0.05),
    "minorness": (minor_chord_share, +1, 0.5),
    "loudness": (crest_loudness, +1, 0.5),
    "brightness": (centroid, +1, 0.5),
    "tempo": (onset_rate, +1, 0.25),
}


@pytest.mark.parametrize("control", list(AUDIBLE))
def test_control_changes_the_audio(control: str) -> None:
    descriptor, sign, margin = AUDIBLE[control]
    seeds = range(4)
    low = np.array([descriptor(render.render_excerpt({**BASE, control: 0.1}, 8.0, SR, s)) for s in seeds])
    high = np.array([descriptor(render.render_excerpt({**BASE, control: 0.9}, 8.0, SR, s)) for s in seeds])
    change = sign * (high.mean() - low.mean()) / np.abs(low.mean())
    assert change > margin, (control, low, high)
    assert np.mean(sign * (high - low) > 0) >= 0.75, (control, low, high)  # per seed, too
