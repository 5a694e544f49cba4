"""The composer of the synthetic dataset: :func:`compose` turns an excerpt's 10 controls into a timed score."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

# --------------------------------------------------------------------------- composition
_MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])


_MINOR = np.array([0, 2, 3, 5, 7, 8, 10])


#: Functional progressions as scale degrees (0 = I): I-IV-V-I, I-vi-IV-V, ...
_PROGRESSIONS = ((0, 3, 4, 0), (0, 5, 3, 4), (0, 3, 0, 4), (0, 4, 5, 3), (1, 4, 0, 0), (0, 5, 1, 4))


#: Non-diatonic roots (semitones above the key) used by unstable harmony.
_CHROMATIC_ROOTS = (1, 3, 6, 8, 10)


#: Dissonant tones added above the root: m2, M2, tritone, M7, m9, M9.
_DISSONANT_TONES = (1, 2, 6, 11, 13, 14)


#: One chord every 2 beats; 4 chords make a phrase.
_CHORD_BEATS = 2


#: Chords per mode unit: the mode (major or relative minor) is chosen per 2 chords.
_MODE_SLOTS = 2


class _Clock:
    """Score time (beats) -> seconds, with tempo drift and onset jitter."""

    def __init__(self, bpm: float, n_beats: int, stability: float, rng: np.random.Generator):
        instability = (1.0 - stability) ** 1.5
        walk = np.cumsum(rng.normal(0.0, 0.035 * instability, n_beats))
        rubato = 0.12 * instability * np.sin(
            2 * np.pi * np.arange(n_beats) / rng.uniform(6, 12) + rng.uniform(0, 2 * np.pi))
        durations = 60.0 / bpm * np.exp(walk - walk.mean() + rubato)
        self.beat_times = np.concatenate([[0.0], np.cumsum(durations)])
        self.jitter_sd = 0.04 * instability
        self.beat_s = 60.0 / bpm

    def times(self, beats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        beats = np.asarray(beats, dtype=float)
        t = np.interp(beats, np.arange(len(self.beat_times)), self.beat_times)
        return np.maximum(t + rng.normal(0.0, self.jitter_sd, beats.shape), 0.0)


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    return int(math.floor(x + rng.random()))


def even_share(share: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` booleans; every run of ``k`` holds ``share * k`` (+- 1) True values (error diffusion, random phase)."""
    steps = np.floor(np.arange(n + 1) * share + rng.random())
    return np.diff(steps) > 0


def _harmony(c: Mapping[str, float], n_slots: int, rng: np.random.Generator) -> dict[str, Any]:
    """Key, mode, root, quality and voicing of each chord slot (4 slots = 1 phrase).

    minorness: share of 2-chord units in the relative minor, spread evenly (:func:`even_share`); tonal_stability:
    functional diatonic progressions in one key vs chromatic roots, modulations, diminished/augmented triads;
    dissonance: added seconds, tritones and sevenths.
    """
    ts, d, mn = c["tonal_stability"], c["dissonance"], c["minorness"]
    minor_unit = even_share(mn, math.ceil(n_slots / _MODE_SLOTS), rng)
    key = int(rng.integers(12))
    out: dict[str, Any] = {name: np.zeros(n_slots, dtype=int) for name in ("key", "root", "degree")}
    out["mode_minor"], out["minor"] = np.zeros(n_slots, dtype=bool), np.zeros(n_slots, dtype=bool)
    out["voicing"] = []
    for slot in range(n_slots):
        unit_minor = bool(minor_unit[slot // _MODE_SLOTS])
        if slot % 4 == 0:
            if slot and rng.random() < (1 - ts) ** 2:
                key = (key + int(rng.integers(1, 12))) % 12
            pattern = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
        tonic = (key + 9) % 12 if unit_minor else key  # minor units: the relative minor
        if rng.random() < 0.9 * (1 - ts) ** 2:
            degree, minor = -1, bool(rng.random() < mn)
            root = (tonic + _CHROMATIC_ROOTS[int(rng.integers(len(_CHROMATIC_ROOTS)))]) % 12
        else:
            degree = pattern[slot % 4]
            root = (tonic + (_MINOR if unit_minor else _MAJOR)[degree]) % 12
            minor = degree not in (2, 5, 6) if unit_minor else degree in (1, 2, 5, 6)
        out["key"][slot], out["root"][slot], out["degree"][slot] = tonic, root, degree
        out["mode_minor"][slot], out["minor"][slot] = unit_minor, minor
        base = 48 + root
        fifth = 7
        if rng.random() < 0.6 * (1 - ts) ** 2:  # unstable: diminished / augmented triads
            fifth = 6 if minor else 8
        pitches = [base, base + (3 if minor else 4), base + fifth, base + 12]
        amps = [1.0, 0.9, 0.9, 0.6]
        n_add = min(len(_DISSONANT_TONES), _stochastic_round(3.0 * d ** 1.2 * rng.uniform(0.7, 1.3), rng))
        for tone in rng.choice(_DISSONANT_TONES, size=n_add, replace=False):
            pitches.append(base + int(tone))
            amps.append(0.8)
        out["voicing"].append((pitches, amps))
    return out


def _melody_rhythm(rc: float, m: float, length: int, rng: np.random.Generator) -> np.ndarray:
    """Onset positions (beats) of one melodic phrase."""
    pos: list[float] = []
    for beat in range(length):
        if rng.random() < 0.35 * rc:  # a triplet against the duple grid
            pos += [beat + k / 3 for k in range(3) if rng.random() < 0.85]
            continue
        if rng.random() < 0.85:
            pos.append(beat - 0.25 if rng.random() < 0.5 * rc else beat)  # syncopated anticipation
        if rng.random() < 0.25 + 0.35 * rc:
            pos.append(beat + (0.75 if rng.random() < 0.5 * rc else 0.5))
    if rng.random() < 0.9 * m:  # breathe at the end of the phrase
        pos = [p for p in pos if p < length - 1.5]
    return np.array(sorted({round(max(p, 0.0), 4) for p in pos}))


def _melody(c: Mapping[str, float], h: dict[str, Any], n_beats: int,
            rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """Lead notes (beat, gate in beats, MIDI pitch, velocity); melodiousness: phrased, stepwise vs sparse leaps."""
    m, rc, ts = c["melodiousness"], c["rhythm_complexity"], c["tonal_stability"]
    centre = 76 + 8 * (c["brightness"] - 0.5)
    gate_factor = _gate_factor(c["articulation"])
    notes: list[tuple[float, float, float, float]] = []
    k, phrase_len, previous = 3, 8, None
    for start in range(0, n_beats, phrase_len):
        if rng.random() > 0.25 + 0.75 * m:
            previous = None
            continue
        rhythm = previous if previous is not None and rng.random() < m else _melody_rhythm(rc, m, phrase_len, rng)
        previous = rhythm
        rhythm = rhythm[rng.random(len(rhythm)) < 1 - 0.6 * (1 - m)]
        ends = np.append(rhythm[1:], phrase_len)
        for pos, end in zip(rhythm, ends):
            beat = start + pos
            slot = min(int(beat // _CHORD_BEATS), len(h["key"]) - 1)
            if rng.random() < 0.15 + 0.85 * m:
                k += int(rng.choice([-1, 1, -2, 2, 0], p=[.38, .38, .1, .1, .04]))
                k = _reflect(k, 0, 8)
            else:
                k = _reflect(k + int(rng.choice([-1, 1]) * rng.integers(4, 10)), -3, 11)
            # melody degrees k count in the parent major scale (the relative minor shares its notes, so a
            # change of mode moves no note); the minor's degree d is the parent's d + 5
            shift = 5 if h["mode_minor"][slot] else 0
            degree = h["degree"][slot]
            if degree >= 0 and pos % 2 == 0 and rng.random() < 0.6 * m:  # chord tone on strong beats
                candidates = np.arange(k - 3, k + 4)
                candidates = candidates[np.isin((candidates - degree - shift) % 7, (0, 2, 4))]
                k = int(candidates[np.argmin(np.abs(candidates - k))])
            if end == phrase_len and rng.random() < ts:  # cadence on the tonic (the minor's, in minor)
                k = shift + 7 * round((k - shift) / 7)
            parent = (h["key"][slot] + 3) % 12 if shift else h["key"][slot]
            tonic = parent + 12 * round((centre - 4 - parent) / 12)
            pitch = tonic + 12 * (k // 7) + _MAJOR[k % 7]
            if rng.random() < 0.45 * (1 - ts):
                pitch += int(rng.choice([-1, 1]))
            accent = 1.0 + 0.2 * c["rhythm_stability"] if beat % 4 == 0 else 0.9
            notes.append((beat, min(end - pos, 2.0) * gate_factor, float(pitch), accent))
    return notes


def _reflect(k: int, lo: int, hi: int) -> int:
    while k < lo or k > hi:
        k = 2 * lo - k if k < lo else 2 * hi - k
    return k


def _gate_factor(articulation: float) -> float:
    """Sounding length / inter-onset interval: ~1.0 legato, ~0.2 staccato."""
    return 1.12 - 1.0 * articulation


def _accent(beat: float, stability: float) -> float:
    """Velocity factor of a note on ``beat``: strong downbeats with a stable rhythm."""
    return 1.0 + 0.4 * stability if beat % 4 == 0 else 0.85


def _chord_events(n_beats: int, rc: float, s: float, rng: np.random.Generator) -> list[tuple[float, int, float]]:
    """Chords (beat, slot, accent), struck on the beats; pushed / off-beat stabs with complexity ``rc``."""
    events: list[tuple[float, int, float]] = []
    for beat in range(n_beats):
        slot = beat // _CHORD_BEATS
        on = beat - 0.5 if rng.random() < 0.6 * rc else float(beat)
        events.append((on, slot, _accent(beat, s)))
        if rng.random() < 0.35 * rc:
            events.append((beat + (0.5 if rng.random() < 0.5 else 0.75), slot, 0.7))
    events.sort()
    return events


def _bass_events(c: Mapping[str, float], h: dict[str, Any], n_slots: int,
                 rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Bass (beat, MIDI pitch, accent): roots on the beats, or a 3+3+2 tresillo against the beat."""
    rc, s = c["rhythm_complexity"], c["rhythm_stability"]
    events: list[tuple[float, float, float]] = []
    for slot in range(n_slots):
        if slot % 4 == 0:  # a tonic pedal makes the key unmistakable
            pedal = rng.random() < 0.8 * c["tonal_stability"] ** 2
        root = 36 + (h["key"][slot] if pedal else h["root"][slot])
        b0 = slot * _CHORD_BEATS
        offsets = (0.0, 0.75, 1.5) if rng.random() < rc else (0.0, 1.0)
        for j, off in enumerate(offsets):
            events.append((b0 + off, root + (7 if j == 1 and rng.random() < 0.5 else 0), _accent(b0 + off, s)))
    return events


def _drum_events(n_beats: int, rc: float, s: float, rng: np.random.Generator) -> list[tuple[float, str, float]]:
    """Drums (beat, kind, velocity): kick/snare pulse growing with ``s``; off-beat hats, triplet shakers with ``rc``."""
    hat_p = np.array([0.95, 0.05, 0.80, 0.05]) + rc * np.array([-0.45, 0.50, -0.10, 0.55])
    drums: list[tuple[float, str, float]] = []
    for beat in range(n_beats):
        if beat % 4 == 0:
            drums.append((beat, "kick", 0.25 + 0.75 * s))
        elif beat % 4 == 2:
            drums.append((beat, "kick", 0.55 * s))
        else:
            drums.append((beat, "snare", 0.15 + 0.45 * s))
        for j in range(4):
            if rng.random() < hat_p[j]:
                drums.append((beat + j / 4, "hat", 1.0 if j == 0 else 0.7 + 0.5 * rc))
        if rng.random() < rc ** 1.5:
            drums += [(beat + j / 3, "shaker", 0.4 + 0.6 * rc) for j in range(3)]
    return drums


def _inter_onsets(beats: list[float]) -> np.ndarray:
    """Beats from each onset to the next (1 beat after the last)."""
    return np.diff(np.append(beats, beats[-1] + 1.0))


def _dynamics(n: int, loudness: float, rng: np.random.Generator) -> np.ndarray:
    """Random velocity factors; their spread shrinks with loudness (compressed playing)."""
    return np.exp(rng.normal(0.0, 0.3 * (1 - loudness), n))


def _timed_notes(clock: _Clock, beats: list[float], gates: np.ndarray, pitches: Any, accents: list[float],
                 loudness: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray]:
    """(onsets in s, gates in s, pitches, velocities) of notes at ``beats`` with ``gates`` in beats."""
    onsets = clock.times(np.array(beats, dtype=float), rng)
    return onsets, gates * clock.beat_s, pitches, np.array(accents) * _dynamics(len(accents), loudness, rng)


def compose(c: Mapping[str, float], duration_s: float, rng: np.random.Generator) -> dict[str, Any]:
    """The score of one excerpt: every note and drum hit with its time in seconds.

    ``c`` holds the 10 controls of :data:`mer_lib.data.synth.model.CONTROLS`, each in [0, 1]; the score runs longer
    than ``duration_s``; ``rng`` is the source of everything random, consumed in a fixed order.

    Returns
    -------
    dict
        ``chords`` (onsets, gates, chord slots, velocities), ``bass`` and ``melody`` (onsets, gates, MIDI pitches,
        velocities), ``drums`` (onsets, kinds, velocities) and the ``harmony`` of :func:`_harmony`; onsets and
        gates in seconds, on the drifting, jittered :class:`_Clock`.
    """
    rc, s, loud = c["rhythm_complexity"], c["rhythm_stability"], c["loudness"]
    bpm = 60.0 + 110.0 * c["tempo"]
    n_beats = 8 * math.ceil((duration_s * bpm / 60.0 * 1.3 + 8) / 8)  # spare beats for tempo drift
    n_slots = n_beats // _CHORD_BEATS
    clock = _Clock(bpm, n_beats, s, rng)
    h = _harmony(c, n_slots, rng)
    gate_factor = _gate_factor(c["articulation"])
    chord_ev = _chord_events(n_beats, rc, s, rng)
    bass_ev = _bass_events(c, h, n_slots, rng)
    drums = _drum_events(n_beats, rc, s, rng)
    mel = _melody(c, h, n_beats, rng)
    ch_beats, bass_beats = [e[0] for e in chord_ev], [e[0] for e in bass_ev]
    # the rng is consumed part by part, onsets before velocities, in this order
    return {
        "chords": _timed_notes(clock, ch_beats, _inter_onsets(ch_beats) * gate_factor, [e[1] for e in chord_ev],
                               [e[2] for e in chord_ev], loud, rng),
        "bass": _timed_notes(clock, bass_beats, _inter_onsets(bass_beats) * gate_factor,
                             np.array([e[1] for e in bass_ev], float), [e[2] for e in bass_ev], loud, rng),
        "melody": _timed_notes(clock, [n[0] for n in mel], np.array([n[1] for n in mel]),
                               np.array([n[2] for n in mel]), [n[3] for n in mel], loud, rng),
        "drums": (clock.times(np.array([d[0] for d in drums], dtype=float), rng), [d[1] for d in drums],
                  np.array([d[2] for d in drums]) * _dynamics(len(drums), loud, rng)),
        "harmony": h,
    }
