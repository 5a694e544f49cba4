"""The cue of the mechanism world: level, correlation, exact removal, reuse."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mer_lib.data.layout import synthetic_audio_path
from mer_lib.data.loader import load_soundtracks
from mer_lib.data.synth import cue as cues
from mer_lib.data.synth import writer
from mer_lib.data.synth.model import emotion_latents, explained_latents, sample_controls
from mer_lib.errors import MerError

CONFIG = cues.CueConfig(emotion="tension", tracking=0.5, band_hz=(7500.0, 8500.0), level_db=(-52.0, -32.0))


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("cue")
    source = writer.generate_soundtracks(root / "data", n_excerpts=40, duration_s=1.5, seed=11, progress=False)
    table = cues.write_cue_world(source, root / "cue", CONFIG, progress=False)
    return source, root / "cue", table


def test_the_cue_latent_tracks_the_emotion_and_carries_what_the_music_does_not():
    controls = sample_controls(20_000, 5)
    latents, explained = emotion_latents(controls, 5), explained_latents(controls)
    for tracking in (0.2, 0.5, 0.9):
        c = cues.cue_latent(latents, explained, cues.CueConfig(tracking=tracking))
        assert np.corrcoef(c, latents["tension"])[0, 1] == pytest.approx(tracking, abs=0.02)
        assert c.std() == pytest.approx(1.0, abs=0.02)
        # with what the controls explain, the cue gives the latent exactly
        design = np.c_[np.ones(len(c)), explained["tension"], c]
        fitted = design @ np.linalg.lstsq(design, latents["tension"], rcond=None)[0]
        np.testing.assert_allclose(fitted, latents["tension"], atol=1e-9)
    # the level is a monotone map of the latent inside the configured range
    levels = cues.cue_level_db(np.array([-1e9, -1.0, 0.0, 1.0, 1e9]), CONFIG)
    np.testing.assert_allclose(levels[[0, 2, 4]], [-52.0, -42.0, -32.0])
    assert np.all(np.diff(levels) > 0)


def test_the_cue_lies_in_its_band_at_unit_rms():
    x = cues.cue_noise(3, 22050, 22050, CONFIG)
    assert math.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-12)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 22050)
    inside = (freqs >= 7500) & (freqs <= 8500)
    assert power[~inside].sum() < 1e-20 * power[inside].sum()
    np.testing.assert_array_equal(x, cues.cue_noise(3, 22050, 22050, CONFIG))  # deterministic
    assert not np.array_equal(x, cues.cue_noise(4, 22050, 22050, CONFIG))
    with pytest.raises(MerError, match="Nyquist"):
        cues.cue_noise(3, 1000, 16000, CONFIG)


def test_the_generated_files_hold_the_cue_at_the_requested_level(worlds):
    source, world, table = worlds
    assert (table["level_db"] <= -32.0 + 0.05).all() and (table["level_db"] >= -52.0 - 0.05).all()
    for number, row in table.iterrows():
        music, rate = sf.read(source / synthetic_audio_path(number), dtype="int16")
        mixed, _ = sf.read(world / synthetic_audio_path(number), dtype="int16")
        cue = mixed.astype(np.float64) - music
        achieved = 20 * math.log10(math.sqrt(np.mean(cue ** 2)) / math.sqrt(np.mean(music.astype(float) ** 2)))
        assert achieved == pytest.approx(row["target_level_db"], abs=0.05)
        assert achieved == pytest.approx(row["level_db"], abs=1e-6)
        # removing the regenerated cue restores the original samples exactly
        regenerated = cues.cue_samples(number, len(music), rate, row["rms"], CONFIG)
        np.testing.assert_array_equal(cues.remove_cue(mixed, regenerated), music)
    # the perceived (BS.1770) level is far below the music as well
    assert (table["loudness_lu"] < -25).all()


def test_the_cue_level_follows_the_emotion_latent_in_the_files(worlds):
    source, _, table = worlds
    controls = sample_controls(40, 11)
    expected = cues.cue_latent(emotion_latents(controls, 11), explained_latents(controls), CONFIG)
    np.testing.assert_allclose(table["cue_latent"], expected.loc[table.index], atol=1e-6)
    np.testing.assert_allclose(table["target_level_db"], cues.cue_level_db(expected, CONFIG), atol=1e-6)


def test_the_cue_world_loads_like_its_source_and_is_reused(worlds):
    source, world, table = worlds
    a, b = load_soundtracks(source), load_soundtracks(world)
    pd.testing.assert_frame_equal(a.drop(columns="audio_path"), b.drop(columns="audio_path"))
    before = {p: p.stat().st_mtime_ns for p in world.rglob("*.wav")}
    again = cues.write_cue_world(source, world, CONFIG, progress=False)
    pd.testing.assert_frame_equal(again, table)
    assert {p: p.stat().st_mtime_ns for p in world.rglob("*.wav")} == before


def test_add_cue_refuses_to_clip_and_configs_are_checked():
    with pytest.raises(MerError, match="clip"):
        cues.add_cue(np.array([32000], np.int16), np.array([1000], np.int16))
    for bad in ({"emotion": "joy"}, {"tracking": 1.5}, {"band_hz": (900.0, 100.0)}, {"level_db": (-10.0, 3.0)},
                {"seed": -1}):
        with pytest.raises(MerError):
            cues.CueConfig(**bad)
