"""The synthesiser of the synthetic dataset: additive (wavetable) tones and filtered-noise drums."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.signal import butter, sosfilt

from mer_lib.config import SAMPLE_RATE
from mer_lib.data.synth.model import CONTROLS, check_sample_rate, check_seed
from mer_lib.data.synth.score import compose
from mer_lib.errors import MerError

# --------------------------------------------------------------------------- synthesis
_TABLE_BITS = 13


_TABLE_N = 1 << _TABLE_BITS


@lru_cache(maxsize=64)
def _wavetable(n_harmonics: int, rolloff: float) -> np.ndarray:
    """One period of a band-limited tone with harmonic amplitudes k^-rolloff."""
    spectrum = np.zeros(_TABLE_N // 2 + 1, dtype=complex)
    k = np.arange(1, n_harmonics + 1)
    spectrum[k] = -0.5j * _TABLE_N * k ** -rolloff  # sum_k k^-rolloff sin(2 pi k x)
    table = np.fft.irfft(spectrum, n=_TABLE_N)
    return (table / np.abs(table).max()).astype(np.float32)


def _midi_hz(pitch: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=float) - 69.0) / 12.0)


_Voices = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _add_tones(out: np.ndarray, sr: int, onsets: np.ndarray, gates: np.ndarray, notes: list[_Voices],
               rolloff: float, articulation: float, rng: np.random.Generator) -> None:
    """Add notes ``(freqs, amps, inharmonic_freqs, inharmonic_amps)`` to ``out``: wavetable voices plus sine partials.

    ``articulation`` sets attack (3 ms sharp to ~80 ms soft), decay and release; voices below 0.002 are skipped.
    """
    legato = (1.0 - articulation) ** 2
    attack, release, decay = 0.003 + 0.09 * legato, 0.015 + 0.2 * legato, 0.3 + 2.5 * legato
    top = max((float(np.max(note[0])) for note in notes), default=1.0)
    tables = (_wavetable(max(1, min(40, int(0.45 * sr / top))), round(rolloff, 3)), _wavetable(1, 0.0))
    lengths = [min(int((gate + 5 * release) * sr), len(out) - int(round(onset * sr)))
               for onset, gate in zip(onsets, gates)]
    n_max = max(lengths, default=0)
    n_all = np.arange(max(n_max, 1), dtype=np.uint32)
    t_all = n_all / sr
    onset_env = np.minimum(t_all / attack, 1.0) * np.exp(-t_all / decay)  # shared by all notes
    release_env = np.exp(-t_all / release)
    for onset, gate, note, length in zip(onsets, gates, notes, lengths):
        if length <= 0:
            continue
        start = int(round(onset * sr))
        env = onset_env[:length].copy()
        held = min(int(gate * sr), length)
        env[held:] *= release_env[:length - held]
        wave = np.zeros(length, dtype=np.float32)
        for table, f, a in ((tables[0], note[0], note[1]), (tables[1], note[2], note[3])):
            keep = a >= 0.002
            if not keep.any():
                continue
            # phase as uint32 where 2^32 is one period: the products wrap around
            # exactly at the period, and the top bits index the table
            step = np.round(f[keep] / sr * 2.0 ** 32).astype(np.uint64).astype(np.uint32)
            phase = np.multiply.outer(step, n_all[:length])
            phase += rng.integers(0, 2 ** 32, len(step), dtype=np.uint32)[:, None]
            phase >>= 32 - _TABLE_BITS
            wave += a[keep].astype(np.float32) @ table[phase]
        out[start:start + length] += env * wave


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kick (pitch-swept sine), snare, hi-hat and shaker (filtered noise)."""
    def noise(seconds: float, lo: float, hi: float) -> np.ndarray:
        high = min(hi, 0.45 * sr) / (sr / 2)
        sos = butter(2, [min(lo / (sr / 2), 0.5 * high), high], btype="band", output="sos")
        return sosfilt(sos, rng.standard_normal(int(seconds * sr)))

    t = np.arange(int(0.35 * sr)) / sr
    kick = np.sin(2 * np.pi * np.cumsum(45 + 100 * np.exp(-t / 0.04)) / sr) * np.exp(-t / 0.15)
    ts = np.arange(int(0.25 * sr)) / sr
    snare = noise(0.25, 1000, 6000) * 2 * np.exp(-ts / 0.08) + 0.5 * np.sin(2 * np.pi * 185 * ts) * np.exp(-ts / 0.05)
    th = np.arange(int(0.12 * sr)) / sr
    hat = noise(0.12, 6000, 10500) * 3 * np.exp(-th / 0.03)
    shaker = noise(0.12, 3000, 8000) * 2 * np.minimum(th / 0.005, 1) * np.exp(-th / 0.035)
    return {"kick": kick, "snare": snare, "hat": hat, "shaker": shaker}


_DRUM_GAIN = {"kick": 0.9, "snare": 0.35, "hat": 0.12, "shaker": 0.10}


def _validate_render_controls(controls: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(controls, Mapping) and not isinstance(controls, pd.Series):
        raise MerError(f"controls must be a mapping of {list(CONTROLS)} to values in [0, 1]")
    missing = [c for c in CONTROLS if c not in controls]
    if missing:
        raise MerError(f"controls: missing {missing}; expected all of {list(CONTROLS)}")
    out = {}
    for name in CONTROLS:
        try:
            value = float(controls[name])
        except (TypeError, ValueError):
            raise MerError(f"controls[{name!r}] must be a number in [0, 1], got {controls[name]!r}") from None
        if not 0.0 <= value <= 1.0:
            raise MerError(f"controls[{name!r}] must be in [0, 1], got {value!r}")
        out[name] = value
    return out


def _check_render_args(controls: Mapping[str, float], duration_s: float, sample_rate: int,
                       seed: int) -> tuple[dict[str, float], int, int]:
    """The validated controls, seed and sample rate of :func:`render_excerpt`."""
    c = _validate_render_controls(controls)
    seed = check_seed(seed)
    if not isinstance(duration_s, (int, float, np.number)) or not math.isfinite(duration_s) or duration_s < 0.5:
        raise MerError(f"duration_s must be a number >= 0.5 seconds, got {duration_s!r}")
    return c, seed, check_sample_rate(sample_rate)


def _voices(pitches: np.ndarray, amps: np.ndarray, dissonance: float) -> _Voices:
    """A note's voices; dissonance gives every voice a detuned twin (beating), the lowest an inharmonic partial."""
    detune = 2.0 ** ((10 + 25 * dissonance) / 1200)
    f = _midi_hz(pitches)
    return (np.concatenate([f, f * detune]), np.concatenate([amps, amps * 0.9 * dissonance]),
            f[:1] * 2.76, amps[:1] * 0.5 * dissonance ** 2)


def _render_tonal(score: dict[str, Any], c: dict[str, float], n: int, sr: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Chords, bass and lead of ``score`` (plus noise with dissonance), ``n`` samples."""
    h = score["harmony"]
    d, art, loud = c["dissonance"], c["articulation"], c["loudness"]
    rolloff = 2.4 - 1.6 * c["brightness"]
    tonal = np.zeros(n)
    onsets, gates, slots, vel = score["chords"]
    chords = []
    for slot, v in zip(slots, vel):
        pitches, amps = (np.array(x, dtype=float) for x in h["voicing"][slot])
        # loudness: the root and fifth doubled an octave up
        pitches, amps = np.append(pitches, pitches[[0, 2]] + 12), np.append(amps, amps[[0, 2]] * 0.6 * loud)
        chords.append(_voices(pitches, amps * 0.22 * v, d))
    _add_tones(tonal, sr, onsets, gates, chords, rolloff, art, rng)

    onsets, gates, pitches, vel = score["bass"]
    bass = [_voices(np.array([p, p - 12]), np.array([1.0, 0.6 * loud]) * 0.5 * v, d) for p, v in zip(pitches, vel)]
    _add_tones(tonal, sr, onsets, gates, bass, rolloff + 0.3, art, rng)

    onsets, gates, pitches, vel = score["melody"]
    lead_gain = 0.9 * (0.15 + 0.85 * c["melodiousness"])
    lead = [_voices(np.array([p]), np.array([lead_gain * v]), d) for p, v in zip(pitches, vel)]
    _add_tones(tonal, sr, onsets, gates, lead, rolloff, art, rng)

    if d > 0:  # noisy timbre
        sos = butter(2, [300 / (sr / 2), min(4000, 0.45 * sr) / (sr / 2)], btype="band", output="sos")
        noise = sosfilt(sos, rng.standard_normal(n))
        tonal += 0.15 * d ** 1.5 * noise * (np.abs(tonal).max() / max(np.abs(noise).max(), 1e-12))
    return tonal


def _render_drums(score: dict[str, Any], n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """The drum hits of ``score``, ``n`` samples."""
    drums = np.zeros(n)
    kit = _drum_kit(sr, rng)
    times, kinds, vel = score["drums"]
    for t0, kind, v in zip(times, kinds, vel):
        start = int(round(t0 * sr))
        if start < n:
            hit = kit[kind][:n - start]
            drums[start:start + len(hit)] += _DRUM_GAIN[kind] * v * hit
    return drums


def _master(mix: np.ndarray, c: dict[str, float], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Tilt (brightness), swells and compression (loudness), noise floor, fades, peak 0.7, float32."""
    b, loud, n = c["brightness"], c["loudness"], len(mix)
    cutoff = min(1000.0 * 2.0 ** (3.5 * b), 0.45 * sr)  # brightness: spectral tilt
    mix = sosfilt(butter(2, cutoff / (sr / 2), output="sos"), mix)
    t = np.arange(n) / sr  # loudness: slow swells (dynamic range) vs flat and compressed
    mix *= 1.0 - (1 - loud) * 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(5, 9) + rng.uniform(0, 2 * np.pi)))
    drive = 1.0 + 5.0 * loud
    mix = np.tanh(drive * mix / max(np.abs(mix).max(), 1e-12)) / math.tanh(drive)
    mix += 1e-3 * rng.standard_normal(n)  # room-noise floor: never exact digital silence
    fade = min(int(0.01 * sr), n // 4)
    ramp = np.arange(1, fade + 1) / fade
    mix[:fade] *= ramp
    mix[n - fade:] *= ramp[::-1]
    return (0.7 * mix / np.abs(mix).max()).astype(np.float32)


def render_excerpt(controls: Mapping[str, float], duration_s: float, sample_rate: int = SAMPLE_RATE,
                   seed: int = 0) -> np.ndarray:
    """Synthesise one excerpt from its controls.

    ==================  ==============================================================================================
    control             audible cause (low -> high)
    ==================  ==============================================================================================
    melodiousness       no / fragmented lead with leaps -> stepwise, phrased, motivic lead
    articulation        legato (long notes, soft attacks) -> staccato (short, sharp)
    rhythm_complexity   on-beat 8ths -> syncopation, off-beat 16ths, triplets, tresillo bass
    rhythm_stability    drifting tempo, jitter, weak drums -> steady pulse, strong downbeats
    dissonance          plain triads -> added 2nds/tritones/7ths, detuned and inharmonic partials, noise
    tonal_stability     chromatic roots, modulations, altered melody notes -> diatonic functional progressions, one key
    minorness           share of minor chords (and of the minor scale in the melody)
    loudness            swells, velocity spread -> octave doublings, compression (not gain: the front end normalises)
    brightness          steep harmonic rolloff, low cut-off, low register -> bright, high
    tempo               60 -> 170 BPM
    ==================  ==============================================================================================

    Parameters
    ----------
    controls : mapping
        The 10 controls of :data:`CONTROLS`, each in [0, 1] (extra keys ignored).
    duration_s : float
        Length in seconds (>= 0.5).
    sample_rate : int
        Output sample rate in Hz (>= 8000).
    seed : int
        Seed of everything random in the rendering (melody, timing, noise).

    Returns
    -------
    numpy.ndarray
        float32 mono signal of ``round(duration_s * sample_rate)`` samples, peak 0.7, 10-ms fades and a noise floor
        57 dB below the peak (never digital silence); a pure function of the arguments.
    """
    c, seed, sr = _check_render_args(controls, duration_s, sample_rate, seed)
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    score = compose(c, duration_s, rng)
    tonal = _render_tonal(score, c, n, sr, rng)  # the rng is consumed in this order
    mix = tonal + _render_drums(score, n, sr, rng)
    return _master(mix, c, sr, rng)
