"""Tests of mer_lib.data.synth.render: the synthesiser of the synthetic excerpts.

Every control must have an *audible* effect, measured with a descriptor
computed from the waveform alone.
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest
from scipy.ndimage import maximum_filter1d
from synth_fixtures import BASE, SR

from mer_lib.data.synth import model as synth_model
from mer_lib.data.synth import render
from mer_lib.errors import MerError


def test_render_validates_controls() -> None:
    with pytest.raises(MerError, match="missing.*tempo"):
        render.render_excerpt({c: 0.5 for c in synth_model.CONTROLS if c != "tempo"}, 2.0)
    with pytest.raises(MerError, match="'dissonance'.*\\[0, 1\\]"):
        render.render_excerpt({**BASE, "dissonance": 1.5}, 2.0)
    with pytest.raises(MerError, match="duration_s"):
        render.render_excerpt(BASE, -1.0)


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
