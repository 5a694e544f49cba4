"""A deterministic synthetic Soundtracks dataset (protocol §2.2).

Neither Soundtracks Set 1 nor the mid-level annotations can be downloaded
here, so this module *writes* a stand-in in exactly their on-disk formats
(protocol §2.1); the pipeline then reads it through the same loader
(:func:`mer_lib.data.load_soundtracks`)::

    out_dir/Set1/001.wav ...                      16-bit PCM, mono, 22050 Hz
    out_dir/mean_ratings_set1.csv                 emotion ratings 1-9
    out_dir/metadata_annotations/metadata.csv     ';' separated, song id -> Set-1 number
    out_dir/metadata_annotations/annotations.csv  mid-level ratings 1-10, by song id
    out_dir/synthetic/controls.csv                ground truth: latent controls per excerpt
    out_dir/synthetic/generator.json              parameters, weights, hash; written last

How it works
------------
1. :func:`sample_controls` draws, per excerpt, 10 musical controls in [0, 1]:
   the 7 mid-level features (:data:`~mer_lib.constants.MIDLEVEL`) and 3
   :data:`NUISANCE` controls. They share three latent factors (pleasantness,
   activity, darkness; :data:`CONTROL_LOADINGS`) so that they are correlated
   as on the real data; each control is ``Phi(CONTROL_SPREAD * g)`` of a
   standard normal ``g``.
2. :func:`render_excerpt` turns the controls into audio by additive
   (wavetable) synthesis plus filtered-noise percussion. Every control has an
   audible cause (see the table in its docstring).
3. :func:`make_annotations` derives the labels. Mid-level ratings are
   ``1 + 9 * control`` plus rater noise. Emotion ratings are a fixed linear
   map (:func:`emotion_weights`) of the *true* standardised controls (the
   noise-free mid-level values and the nuisance controls) plus noise, clipped
   to 1-9. So the annotations and the emotions are two independent noisy
   views of the same music, as with the two rater panels of the real data.

All randomness of excerpt ``number`` comes from its own stream
``np.random.SeedSequence([seed, number])``: any excerpt can be (re)made
alone, the first k excerpts of a large set equal a set of k, and the same
seed gives byte-identical files.
"""
from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import butter, sosfilt
from scipy.special import ndtr
from tqdm import tqdm

from mer_lib.artifacts import config_hash, file_sha256, read_json, write_bytes, write_json, write_text
from mer_lib.constants import EMOTION_RANGE, EMOTIONS, MIDLEVEL, MIDLEVEL_RANGE, SAMPLE_RATE
from mer_lib.errors import MerError

GENERATOR_VERSION = "1.0.0"

#: Controls that move some emotions but are *not* mid-level features.
NUISANCE: tuple[str, ...] = ("loudness", "brightness", "tempo")
#: All controls, in the column order of :func:`sample_controls`.
CONTROLS: tuple[str, ...] = (*MIDLEVEL, *NUISANCE)
LATENT_FACTORS: tuple[str, ...] = ("pleasantness", "activity", "darkness")

#: Loading of each control on the latent factors; the rest of its unit
#: variance is idiosyncratic noise.
CONTROL_LOADINGS: dict[str, tuple[float, float, float]] = {
    "melodiousness": (0.90, 0.00, -0.10),
    "articulation": (-0.30, 0.85, 0.00),
    "rhythm_complexity": (-0.58, 0.62, 0.00),
    "rhythm_stability": (0.35, 0.10, -0.50),
    "dissonance": (-0.90, 0.20, 0.10),
    "tonal_stability": (0.88, 0.00, -0.15),
    "minorness": (-0.30, -0.20, 0.75),
    "loudness": (-0.10, 0.45, 0.00),
    "brightness": (0.30, 0.10, -0.30),
    "tempo": (0.10, 0.45, -0.15),
}
#: control = Phi(CONTROL_SPREAD * g), g ~ N(0, 1): 1.0 would be uniform.
CONTROL_SPREAD = 0.7
#: SD of the rater noise added to the 1-10 mid-level ratings.
RATER_NOISE_SD = 0.5
#: Excerpt durations are duration_s * U(1 - j, 1 + j).
DURATION_JITTER = 0.10
#: Extra metadata rows of other sources, as a share of the excerpts.
OTHER_SOURCES: tuple[str, ...] = ("jamendo", "magnatagatune")
OTHER_SHARE = 0.10

#: Direction of each emotion's dependence on the standardised controls
#: (rescaled by :func:`emotion_weights`; unlisted controls have weight 0).
EMOTION_LINKS: dict[str, dict[str, float]] = {
    "valence": {"melodiousness": .35, "dissonance": -.30, "tonal_stability": .30,
                "rhythm_complexity": -.30, "brightness": .30},
    "energy": {"articulation": .55, "rhythm_complexity": .45, "loudness": .35, "tempo": .30},
    "tension": {"dissonance": .50, "melodiousness": -.40, "tonal_stability": -.10, "loudness": .15},
    "anger": {"dissonance": .45, "articulation": .35, "melodiousness": -.20, "loudness": .35},
    "fear": {"dissonance": .35, "tonal_stability": -.35, "minorness": .30, "articulation": -.10,
             "brightness": -.15},
    "happy": {"minorness": -.60, "rhythm_stability": .40, "melodiousness": .15, "tempo": .35,
              "brightness": .10},
    "sad": {"articulation": -.50, "minorness": .40, "rhythm_complexity": -.10, "tempo": -.30},
    "tender": {"melodiousness": .55, "articulation": -.60, "brightness": .30, "loudness": -.20},
}
#: Per emotion: (share of the latent variance explained by the controls,
#: rating location, rating scale); rating = clip(loc + scale * latent, 1, 9).
#: A location of 1.0 puts half of the excerpts at the floor.
EMOTION_RATING: dict[str, tuple[float, float, float]] = {
    "valence": (0.95, 4.15, 1.65), "energy": (0.93, 4.15, 1.60), "tension": (0.90, 4.15, 1.55),
    "anger": (0.80, 1.00, 2.60), "fear": (0.80, 1.00, 2.60), "happy": (0.93, 1.00, 3.00),
    "sad": (0.88, 1.00, 2.70), "tender": (0.92, 1.00, 2.70),
}

#: Correlations of the real annotations with the real ratings on Soundtracks
#: quoted in protocol §2.2 (Chowdhury et al., ISMIR 2019), (emotion, feature) -> r.
REAL_CORRELATIONS: dict[tuple[str, str], float] = {
    ("valence", "melodiousness"): 0.88, ("valence", "dissonance"): -0.87,
    ("valence", "tonal_stability"): 0.85, ("valence", "rhythm_complexity"): -0.70,
    ("energy", "articulation"): 0.84, ("energy", "rhythm_complexity"): 0.72,
    ("tension", "dissonance"): 0.86, ("tension", "melodiousness"): -0.83,
    ("happy", "minorness"): -0.73, ("happy", "rhythm_stability"): 0.63,
    ("sad", "articulation"): -0.62,
    ("tender", "melodiousness"): 0.66, ("tender", "articulation"): -0.66,
}

DISCRETE_EMOTIONS: tuple[str, ...] = ("anger", "fear", "happy", "sad", "tender")

# Sub-streams of SeedSequence([seed, number]).
_CONTROL_STREAM, _RENDER_STREAM, _LABEL_STREAM = 0, 1, 2
_N_STREAMS = 3

AUDIO_SUBDIR, RATINGS_FILE = "Set1", "mean_ratings_set1.csv"
ANNOTATIONS_SUBDIR, METADATA_FILE, ANNOTATIONS_FILE = "metadata_annotations", "metadata.csv", "annotations.csv"
TRUTH_SUBDIR, CONTROLS_FILE, GENERATOR_FILE = "synthetic", "controls.csv", "generator.json"
PARTIAL_FILE = "generator.partial.json"  # written first, removed after generator.json
TEXT_FILES: tuple[str, ...] = (RATINGS_FILE, f"{ANNOTATIONS_SUBDIR}/{METADATA_FILE}",
                               f"{ANNOTATIONS_SUBDIR}/{ANNOTATIONS_FILE}", f"{TRUTH_SUBDIR}/{CONTROLS_FILE}")


# --------------------------------------------------------------------------- controls and labels
def _rng(seed: int, number: int, stream: int) -> np.random.Generator:
    """The generator of one sub-stream of excerpt ``number``."""
    return np.random.default_rng(np.random.SeedSequence([seed, number]).spawn(_N_STREAMS)[stream])


def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MerError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _loading_matrix() -> np.ndarray:
    return np.array([CONTROL_LOADINGS[c] for c in CONTROLS], dtype=float)


def control_sd() -> float:
    """Population SD of every control.

    Returns
    -------
    float
        ``sqrt(asin(k^2 / (1 + k^2)) / (2 pi))`` with ``k = CONTROL_SPREAD``:
        the SD of ``Phi(k g)`` for ``g ~ N(0, 1)``, shared by all controls.
    """
    k2 = CONTROL_SPREAD ** 2
    return math.sqrt(math.asin(k2 / (1 + k2)) / (2 * math.pi))


def control_correlation() -> pd.DataFrame:
    """Exact population correlation matrix of the controls.

    Returns
    -------
    pandas.DataFrame
        10 x 10, indexed by :data:`CONTROLS`. For jointly normal ``g_i, g_j``
        with correlation rho (from :data:`CONTROL_LOADINGS`),
        ``corr(Phi(k g_i), Phi(k g_j)) = asin(k^2 rho / (1+k^2)) / asin(k^2 / (1+k^2))``.
    """
    load = _loading_matrix()
    rho = load @ load.T
    np.fill_diagonal(rho, 1.0)
    k2 = CONTROL_SPREAD ** 2
    corr = np.arcsin(k2 * rho / (1 + k2)) / math.asin(k2 / (1 + k2))
    return pd.DataFrame(corr, index=list(CONTROLS), columns=list(CONTROLS))


def emotion_weights() -> pd.DataFrame:
    """The fixed linear map from standardised controls to the emotion latents.

    Row ``e`` is ``sqrt(r2_e) * w_e / sd(w_e . z)`` with ``w_e`` from
    :data:`EMOTION_LINKS` and ``r2_e`` from :data:`EMOTION_RATING`, so each
    latent ``y_e = W[e] . z + sqrt(1 - r2_e) * eps`` has unit variance.

    Returns
    -------
    pandas.DataFrame
        8 emotions x 10 controls (7 mid-level, then :data:`NUISANCE`).
    """
    corr = control_correlation().to_numpy()
    rows = []
    for emotion in EMOTIONS:
        w = np.array([EMOTION_LINKS[emotion].get(c, 0.0) for c in CONTROLS])
        rows.append(math.sqrt(EMOTION_RATING[emotion][0]) * w / math.sqrt(w @ corr @ w))
    return pd.DataFrame(rows, index=list(EMOTIONS), columns=list(CONTROLS))


def sample_controls(n_excerpts: int, seed: int) -> pd.DataFrame:
    """Draw the latent musical controls of ``n_excerpts`` excerpts.

    Parameters
    ----------
    n_excerpts : int
        Number of excerpts (>= 1).
    seed : int
        Dataset seed; excerpt ``k`` uses the stream ``SeedSequence([seed, k])``.

    Returns
    -------
    pandas.DataFrame
        Index ``number`` = 1..n, columns :data:`CONTROLS`, values in (0, 1)
        rounded to 6 decimals.
    """
    seed = _check_seed(seed)
    if isinstance(n_excerpts, bool) or not isinstance(n_excerpts, (int, np.integer)) or n_excerpts < 1:
        raise MerError(f"n_excerpts must be a positive integer, got {n_excerpts!r}")
    load = _loading_matrix()
    unique = np.sqrt(1.0 - (load ** 2).sum(axis=1))
    g = np.empty((int(n_excerpts), len(CONTROLS)))
    for i in range(int(n_excerpts)):
        rng = _rng(seed, i + 1, _CONTROL_STREAM)
        g[i] = load @ rng.standard_normal(len(LATENT_FACTORS)) + unique * rng.standard_normal(len(CONTROLS))
    index = pd.RangeIndex(1, int(n_excerpts) + 1, name="number")
    # rounded to the 6 decimals of controls.csv, so the file reproduces the audio exactly
    return pd.DataFrame(np.round(ndtr(CONTROL_SPREAD * g), 6), index=index, columns=list(CONTROLS))


def excerpt_plan(number: int, seed: int, duration_s: float) -> tuple[float, int]:
    """Duration and render seed of one excerpt of a dataset.

    Parameters
    ----------
    number : int
        Set-1 number of the excerpt (>= 1).
    seed : int
        Dataset seed.
    duration_s : float
        Mean duration of the dataset's excerpts.

    Returns
    -------
    duration : float
        ``duration_s * U(1 - DURATION_JITTER, 1 + DURATION_JITTER)``, rounded to ms.
    render_seed : int
        The ``seed`` to pass to :func:`render_excerpt`.
    """
    rng = _rng(_check_seed(seed), int(number), _RENDER_STREAM)
    duration = round(duration_s * rng.uniform(1 - DURATION_JITTER, 1 + DURATION_JITTER), 3)
    return duration, int(rng.integers(0, 2 ** 31 - 1))


def _check_controls_frame(controls: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in CONTROLS if c not in controls.columns]
    if missing:
        raise MerError(f"controls: missing column(s) {missing}; expected {list(CONTROLS)}")
    values = controls[list(CONTROLS)].to_numpy(dtype=float)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise MerError("controls: every control must be a finite value in [0, 1]")
    numbers = np.asarray(controls.index)
    if not np.issubdtype(numbers.dtype, np.integer) or numbers.min() < 1 or len(set(numbers)) != len(numbers):
        raise MerError("controls: the index must hold unique positive integer excerpt numbers")
    return controls[list(CONTROLS)]


def make_annotations(controls: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mid-level annotations and emotion ratings of the excerpts.

    Parameters
    ----------
    controls : pandas.DataFrame
        As returned by :func:`sample_controls` (index: excerpt numbers).
    seed : int
        Dataset seed; excerpt ``k``'s noise comes from ``SeedSequence([seed, k])``.

    Returns
    -------
    midlevel : pandas.DataFrame
        :data:`~mer_lib.constants.MIDLEVEL` columns, ``1 + 9 c`` plus rater
        noise (SD :data:`RATER_NOISE_SD`), clipped to [1, 10], 3 decimals.
    emotions : pandas.DataFrame
        :data:`~mer_lib.constants.EMOTIONS` columns, clipped to [1, 9], 2
        decimals. Computed from the *true* standardised controls
        ``z = (c - 0.5) / control_sd()`` (equal to the standardised
        noise-free mid-level values) with :func:`emotion_weights`.
    """
    seed = _check_seed(seed)
    values = _check_controls_frame(controls).to_numpy(dtype=float)
    numbers = [int(k) for k in controls.index]
    rater = np.empty((len(numbers), len(MIDLEVEL)))
    eps = np.empty((len(numbers), len(EMOTIONS)))
    for i, number in enumerate(numbers):
        rng = _rng(seed, number, _LABEL_STREAM)
        rater[i] = rng.standard_normal(len(MIDLEVEL))
        eps[i] = rng.standard_normal(len(EMOTIONS))
    mid = 1.0 + 9.0 * values[:, :len(MIDLEVEL)] + RATER_NOISE_SD * rater
    mid = np.round(np.clip(mid, *MIDLEVEL_RANGE), 3)

    z = (values - 0.5) / control_sd()
    r2, loc, scale = (np.array([EMOTION_RATING[e][j] for e in EMOTIONS]) for j in range(3))
    latent = z @ emotion_weights().to_numpy().T + np.sqrt(1 - r2) * eps
    emo = np.round(np.clip(loc + scale * latent, *EMOTION_RANGE), 2)
    index = pd.Index(numbers, name="number")
    return (pd.DataFrame(mid, index=index, columns=list(MIDLEVEL)),
            pd.DataFrame(emo, index=index, columns=list(EMOTIONS)))


def correlation_table(midlevel: pd.DataFrame, emotions: pd.DataFrame) -> pd.DataFrame:
    """Synthetic vs real correlations for the pairs of :data:`REAL_CORRELATIONS`.

    Returns
    -------
    pandas.DataFrame
        One row per (emotion, feature) with columns ``real``, ``synthetic``
        (Pearson r across the given excerpts; NaN if either is constant) and
        ``difference``.
    """
    rows = []
    for (emotion, feature), real in REAL_CORRELATIONS.items():
        x, y = emotions[emotion].to_numpy(float), midlevel[feature].to_numpy(float)
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else math.nan
        rows.append((emotion, feature, real, round(r, 3), round(r - real, 3)))
    return pd.DataFrame(rows, columns=["emotion", "feature", "real", "synthetic", "difference"]
                        ).set_index(["emotion", "feature"])


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


def _harmony(c: Mapping[str, float], n_slots: int, rng: np.random.Generator) -> dict[str, Any]:
    """Key, mode, root, quality and voicing of each chord slot (4 slots = 1 phrase).

    minorness: the share of phrases in the (relative) minor mode, where most
    diatonic chords are minor (i, iv, v) and the melody uses the minor scale,
    vs the major mode (I, IV, V major); tonal_stability: functional diatonic
    progressions in one key (with a tonic pedal in the bass) vs chromatic
    roots, modulations and diminished/augmented triads; dissonance: added
    seconds, tritones and sevenths.
    """
    ts, d, mn = c["tonal_stability"], c["dissonance"], c["minorness"]
    n_phrases = math.ceil(n_slots / 4)
    minor_phrase = np.zeros(n_phrases, dtype=bool)
    minor_phrase[:min(n_phrases, _stochastic_round(mn * n_phrases, rng))] = True
    minor_phrase = rng.permutation(minor_phrase)
    key = int(rng.integers(12))
    out: dict[str, Any] = {name: np.zeros(n_slots, dtype=int) for name in ("key", "root", "degree")}
    out["mode_minor"], out["minor"] = np.zeros(n_slots, dtype=bool), np.zeros(n_slots, dtype=bool)
    out["voicing"] = []
    for slot in range(n_slots):
        phrase_minor = bool(minor_phrase[slot // 4])
        if slot % 4 == 0:
            if slot and rng.random() < (1 - ts) ** 2:
                key = (key + int(rng.integers(1, 12))) % 12
            pattern = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
        tonic = (key + 9) % 12 if phrase_minor else key  # minor phrases: the relative minor
        if rng.random() < 0.9 * (1 - ts) ** 2:
            degree, minor = -1, bool(rng.random() < mn)
            root = (tonic + _CHROMATIC_ROOTS[int(rng.integers(len(_CHROMATIC_ROOTS)))]) % 12
        else:
            degree = pattern[slot % 4]
            root = (tonic + (_MINOR if phrase_minor else _MAJOR)[degree]) % 12
            minor = degree not in (2, 5, 6) if phrase_minor else degree in (1, 2, 5, 6)
        out["key"][slot], out["root"][slot], out["degree"][slot] = tonic, root, degree
        out["mode_minor"][slot], out["minor"][slot] = phrase_minor, minor
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
    """Lead notes (beat, gate in beats, MIDI pitch, velocity).

    melodiousness: phrases present, stepwise motion in the scale, repeated
    motifs and chord tones on strong beats vs sparse fragments with leaps.
    """
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
            degree = h["degree"][slot]
            if degree >= 0 and pos % 2 == 0 and rng.random() < 0.6 * m:  # chord tone on strong beats
                candidates = np.arange(k - 3, k + 4)
                candidates = candidates[np.isin((candidates - degree) % 7, (0, 2, 4))]
                k = int(candidates[np.argmin(np.abs(candidates - k))])
            if end == phrase_len and rng.random() < ts:  # cadence on the tonic
                k = 7 * round(k / 7)
            key = h["key"][slot]
            tonic = key + 12 * round((centre - 4 - key) / 12)
            scale = _MINOR if h["mode_minor"][slot] else _MAJOR
            pitch = tonic + 12 * (k // 7) + scale[k % 7]
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


def _compose(c: Mapping[str, float], duration_s: float, rng: np.random.Generator) -> dict[str, Any]:
    """The score: every note and drum hit with its time in seconds.

    Returns a dict of ``chords`` (onsets, gates, chord slots, velocities),
    ``bass`` and ``melody`` (onsets, gates, MIDI pitches, velocities),
    ``drums`` (onsets, kinds, velocities) and the ``harmony`` of
    :func:`_harmony`. Onsets follow the drifting, jittered :class:`_Clock`.
    """
    rc, s, loud = c["rhythm_complexity"], c["rhythm_stability"], c["loudness"]
    bpm = 60.0 + 110.0 * c["tempo"]
    n_beats = 8 * math.ceil((duration_s * bpm / 60.0 * 1.3 + 8) / 8)  # spare beats for tempo drift
    n_slots = n_beats // _CHORD_BEATS
    clock = _Clock(bpm, n_beats, s, rng)
    h = _harmony(c, n_slots, rng)
    gate_factor = _gate_factor(c["articulation"])

    def accent(beat: float) -> float:
        return 1.0 + 0.4 * s if beat % 4 == 0 else 0.85

    # chords: struck on the beats; pushed / off-beat stabs with complexity
    chord_ev: list[tuple[float, int, float]] = []
    for beat in range(n_beats):
        slot = beat // _CHORD_BEATS
        on = beat - 0.5 if rng.random() < 0.6 * rc else float(beat)
        chord_ev.append((on, slot, accent(beat)))
        if rng.random() < 0.35 * rc:
            chord_ev.append((beat + (0.5 if rng.random() < 0.5 else 0.75), slot, 0.7))
    chord_ev.sort()
    # bass: roots on the beats, or a 3+3+2 tresillo against the beat
    bass_ev: list[tuple[float, float, float]] = []
    for slot in range(n_slots):
        if slot % 4 == 0:  # a tonic pedal makes the key unmistakable
            pedal = rng.random() < 0.8 * c["tonal_stability"] ** 2
        root = 36 + (h["key"][slot] if pedal else h["root"][slot])
        b0 = slot * _CHORD_BEATS
        offsets = (0.0, 0.75, 1.5) if rng.random() < rc else (0.0, 1.0)
        for j, off in enumerate(offsets):
            bass_ev.append((b0 + off, root + (7 if j == 1 and rng.random() < 0.5 else 0), accent(b0 + off)))
    # drums: kick/snare pulse with stability, hi-hat 16ths and triplet shaker with complexity
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

    def to_seconds(beats: list[float]) -> np.ndarray:
        return clock.times(np.array(beats, dtype=float), rng)

    def dynamics(n: int) -> np.ndarray:  # velocity spread shrinks with loudness (compressed playing)
        return np.exp(rng.normal(0.0, 0.3 * (1 - loud), n))

    ch_beats = [e[0] for e in chord_ev]
    ch_ioi = np.diff(np.append(ch_beats, ch_beats[-1] + 1.0))
    bass_beats = [e[0] for e in bass_ev]
    bass_ioi = np.diff(np.append(bass_beats, bass_beats[-1] + 1.0))
    mel = _melody(c, h, n_beats, rng)
    return {
        "chords": (to_seconds(ch_beats), ch_ioi * gate_factor * clock.beat_s, [e[1] for e in chord_ev],
                   np.array([e[2] for e in chord_ev]) * dynamics(len(chord_ev))),
        "bass": (to_seconds(bass_beats), bass_ioi * gate_factor * clock.beat_s,
                 np.array([e[1] for e in bass_ev], float),
                 np.array([e[2] for e in bass_ev]) * dynamics(len(bass_ev))),
        "melody": (to_seconds([n[0] for n in mel]), np.array([n[1] for n in mel]) * clock.beat_s,
                   np.array([n[2] for n in mel]), np.array([n[3] for n in mel]) * dynamics(len(mel))),
        "drums": (to_seconds([d[0] for d in drums]), [d[1] for d in drums],
                  np.array([d[2] for d in drums]) * dynamics(len(drums))),
        "harmony": h,
    }


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
    """Add notes to ``out`` with an articulation envelope.

    Each note is ``(freqs, amps, inharmonic_freqs, inharmonic_amps)``: voices
    read from a band-limited harmonic wavetable (rolloff ``k^-rolloff``) and
    pure sine partials. ``articulation`` sets the attack (sharp 3 ms vs soft
    ~80 ms), the decay and the release; the composer sets the sounding
    length (``gates``). Voices quieter than 0.002 are skipped.
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


def render_excerpt(controls: Mapping[str, float], duration_s: float, sample_rate: int = SAMPLE_RATE,
                   seed: int = 0) -> np.ndarray:
    """Synthesise one excerpt from its controls.

    ==================  ==========================================================
    control             audible cause (low -> high)
    ==================  ==========================================================
    melodiousness       no / fragmented lead with leaps -> stepwise, phrased, motivic lead
    articulation        legato (long notes, soft attacks) -> staccato (short, sharp)
    rhythm_complexity   on-beat 8ths -> syncopation, off-beat 16ths, triplets, tresillo bass
    rhythm_stability    drifting tempo, jitter, weak drums -> steady pulse, strong downbeats
    dissonance          plain triads -> added 2nds/tritones/7ths, detuned and inharmonic
                        partials, noise
    tonal_stability     chromatic roots, modulations, altered melody notes -> diatonic
                        functional progressions in one key
    minorness           share of minor chords (and of the minor scale in the melody)
    loudness            dynamic swells, velocity spread -> octave doublings, compression
                        (density and crest factor, not gain: the front end
                        peak-normalises every file)
    brightness          steep harmonic rolloff, low cut-off, low register -> bright, high
    tempo               60 -> 170 BPM
    ==================  ==========================================================

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
        float32 mono signal of ``round(duration_s * sample_rate)`` samples,
        peak 0.7, never digital silence (a noise floor 57 dB below the
        peak, 10-ms fades); a pure function of the arguments.
    """
    c = _validate_render_controls(controls)
    seed = _check_seed(seed)
    if not isinstance(duration_s, (int, float, np.number)) or not math.isfinite(duration_s) or duration_s < 0.5:
        raise MerError(f"duration_s must be a number >= 0.5 seconds, got {duration_s!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise MerError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    sr, rng = int(sample_rate), np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    score = _compose(c, duration_s, rng)
    h = score["harmony"]
    d, art, b, loud = c["dissonance"], c["articulation"], c["brightness"], c["loudness"]
    rolloff = 2.4 - 1.6 * b

    # dissonance: every voice gets a detuned twin (beating), the lowest an inharmonic partial
    detune = 2.0 ** ((10 + 25 * d) / 1200)

    def voices(pitches: np.ndarray, amps: np.ndarray) -> _Voices:
        f = _midi_hz(pitches)
        return (np.concatenate([f, f * detune]), np.concatenate([amps, amps * 0.9 * d]),
                f[:1] * 2.76, amps[:1] * 0.5 * d ** 2)

    tonal = np.zeros(n)
    onsets, gates, slots, vel = score["chords"]
    chords = []
    for slot, v in zip(slots, vel):
        pitches, amps = (np.array(x, dtype=float) for x in h["voicing"][slot])
        # loudness: the root and fifth doubled an octave up
        pitches, amps = np.append(pitches, pitches[[0, 2]] + 12), np.append(amps, amps[[0, 2]] * 0.6 * loud)
        chords.append(voices(pitches, amps * 0.22 * v))
    _add_tones(tonal, sr, onsets, gates, chords, rolloff, art, rng)

    onsets, gates, pitches, vel = score["bass"]
    bass = [voices(np.array([p, p - 12]), np.array([1.0, 0.6 * loud]) * 0.5 * v) for p, v in zip(pitches, vel)]
    _add_tones(tonal, sr, onsets, gates, bass, rolloff + 0.3, art, rng)

    onsets, gates, pitches, vel = score["melody"]
    lead_gain = 0.9 * (0.15 + 0.85 * c["melodiousness"])
    lead = [voices(np.array([p]), np.array([lead_gain * v])) for p, v in zip(pitches, vel)]
    _add_tones(tonal, sr, onsets, gates, lead, rolloff, art, rng)

    if d > 0:  # noisy timbre
        sos = butter(2, [300 / (sr / 2), min(4000, 0.45 * sr) / (sr / 2)], btype="band", output="sos")
        noise = sosfilt(sos, rng.standard_normal(n))
        tonal += 0.15 * d ** 1.5 * noise * (np.abs(tonal).max() / max(np.abs(noise).max(), 1e-12))

    drums = np.zeros(n)
    kit = _drum_kit(sr, rng)
    times, kinds, vel = score["drums"]
    for t0, kind, v in zip(times, kinds, vel):
        start = int(round(t0 * sr))
        if start < n:
            hit = kit[kind][:n - start]
            drums[start:start + len(hit)] += _DRUM_GAIN[kind] * v * hit
    mix = tonal + drums

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
    """``metadata.csv`` (';') and ``annotations.csv`` (','), joined by song id.

    Song ids start above 1000, are assigned to the excerpts in a shuffled
    order and the annotation rows are in yet another order, so only a join by
    ID gives the right answer. About :data:`OTHER_SHARE` extra rows come from
    other sources.
    """
    rng = _rng(seed, 0, _LABEL_STREAM)  # number 0: the dataset-level stream
    n = len(midlevel)
    n_other = max(2, round(OTHER_SHARE * n))
    other = ndtr(CONTROL_SPREAD * rng.standard_normal((n_other, len(MIDLEVEL))))  # plausible, unused
    other_mid = np.round(np.clip(1 + 9 * other + RATER_NOISE_SD * rng.standard_normal(other.shape),
                                 *MIDLEVEL_RANGE), 3)
    rows = [("soundtracks", int(k), "Synthetic ensemble", f"Cue {int(k):03d}", midlevel.loc[k].to_numpy())
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
        f"{ANNOTATIONS_SUBDIR}/{METADATA_FILE}": metadata,
        f"{ANNOTATIONS_SUBDIR}/{ANNOTATIONS_FILE}": annotations,
        f"{TRUTH_SUBDIR}/{CONTROLS_FILE}": _controls_text(controls, plans),
    }


# --------------------------------------------------------------------------- generation (I/O)
def _audio_name(number: int) -> str:
    return f"{AUDIO_SUBDIR}/{number:03d}.wav"


def _render_file(out: Path, number: int, controls: pd.DataFrame, plans: dict[int, tuple[float, int]],
                 sample_rate: int) -> Path:
    duration, render_seed = plans[number]
    audio = render_excerpt(controls.loc[number], duration, sample_rate, render_seed)
    return write_bytes(out / _audio_name(number), _wav_bytes(audio, sample_rate))


def _render_all(out: Path, numbers: list[int], controls: pd.DataFrame, plans: dict[int, tuple[float, int]],
                sample_rate: int, workers: int) -> Iterator[tuple[int, Path]]:
    """Render ``numbers`` in order, ``workers`` at a time (threads: numpy and scipy release the GIL)."""
    def render(number: int) -> Path:
        return _render_file(out, number, controls, plans, sample_rate)

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


def generate_soundtracks(out_dir: str | Path, n_excerpts: int = 360, duration_s: float = 12.0, seed: int = 2025,
                         sample_rate: int = SAMPLE_RATE, overwrite: bool = False, progress: bool = True,
                         workers: int | None = None) -> Path:
    """Write the synthetic Soundtracks dataset to ``out_dir`` (see the module docstring).

    Parameters
    ----------
    out_dir : path-like
        Target folder (created).
    n_excerpts : int
        Number of Set-1 excerpts.
    duration_s : float
        Mean excerpt length; each excerpt lasts ``duration_s * U(0.9, 1.1)`` s.
    seed : int
        Dataset seed.
    sample_rate : int
        Audio sample rate in Hz.
    overwrite : bool
        Replace a synthetic dataset of a different configuration in
        ``out_dir``. A folder holding a dataset *not* written by this module
        is never touched.
    progress : bool
        Show a progress bar over the excerpts.
    workers : int, optional
        Threads rendering audio in parallel (default: 2, or 1 on a single
        core; the rendering is numpy/scipy code that releases the GIL only in
        part, so 2 threads save about a quarter of the time). Every excerpt
        has its own seed, so the files are identical for any number of workers.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    MerError
        On bad parameters, on a folder that holds another configuration
        (naming the differing fields) unless ``overwrite``, or on a folder
        holding a dataset not written by this generator.

    Notes
    -----
    Resumable: ``synthetic/generator.partial.json`` is written first and
    ``synthetic/generator.json`` last. A rerun with the same configuration
    only (re)writes missing files; every file is written atomically.
    """
    seed = _check_seed(seed)
    if isinstance(n_excerpts, bool) or not isinstance(n_excerpts, (int, np.integer)) or n_excerpts < 1:
        raise MerError(f"n_excerpts must be a positive integer, got {n_excerpts!r}")
    if not isinstance(duration_s, (int, float)) or not math.isfinite(duration_s) or duration_s < 1.0:
        raise MerError(f"duration_s must be a number >= 1.0 seconds, got {duration_s!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise MerError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise MerError(f"workers must be a positive integer, got {workers!r}")
    n_excerpts, duration_s, sample_rate, workers = int(n_excerpts), float(duration_s), int(sample_rate), int(workers)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MerError(f"out_dir {out} exists and is not a folder")
    config = _generator_config(n_excerpts, duration_s, seed, sample_rate)
    chash = config_hash(config)
    final, partial = out / TRUTH_SUBDIR / GENERATOR_FILE, out / TRUTH_SUBDIR / PARTIAL_FILE

    marker = final if final.exists() else partial if partial.exists() else None
    if marker is None:
        foreign = [p.name for p in (out / AUDIO_SUBDIR, out / RATINGS_FILE, out / ANNOTATIONS_SUBDIR) if p.exists()]
        if foreign:
            raise MerError(f"{out} already holds {', '.join(foreign)} not written by mer_lib.synth "
                           f"(no {TRUTH_SUBDIR}/{GENERATOR_FILE}); refusing to touch it, even with "
                           f"overwrite=True: choose an empty folder")
    else:
        record = _read_marker(marker)
        if record["config_hash"] != chash:
            if not overwrite:
                diffs = "; ".join(_config_differences(record["config"], config)) or "config hash"
                raise MerError(f"{out} holds a synthetic dataset of another configuration ({diffs}); "
                               f"use another folder or pass overwrite=True")
            final.unlink(missing_ok=True)
            for wav in (out / AUDIO_SUBDIR).glob("*.wav"):
                if re.fullmatch(r"\d{3,}\.wav", wav.name):
                    wav.unlink()
    complete = final.exists()  # only if the hash matched
    if not complete:
        write_json(partial, {"config": config, "config_hash": chash})

    controls = sample_controls(n_excerpts, seed)
    plans = {k: excerpt_plan(k, seed, duration_s) for k in range(1, n_excerpts + 1)}
    todo = [k for k in range(1, n_excerpts + 1) if not (out / _audio_name(k)).exists()]
    manifest = read_json(final)["files"] if complete else {}
    for number, path in tqdm(_render_all(out, todo, controls, plans, sample_rate, workers), total=len(todo),
                             desc="synthetic Soundtracks", unit="excerpt", disable=not progress or not todo):
        expected = manifest.get(_audio_name(number))
        if expected is not None and file_sha256(path) != expected:
            raise MerError(f"{path}: the regenerated audio differs from its checksum in {final} "
                           f"(this platform's numerics differ from the original run's); delete the "
                           f"folder {out} and generate the whole dataset again")
    missing_texts = [name for name in TEXT_FILES if not (complete and (out / name).exists())]
    if missing_texts:  # cheap: all of them are rewritten unless the dataset is complete
        texts = _texts(controls, plans, seed)
        for name in missing_texts:
            write_text(out / name, texts[name])
    if complete:
        partial.unlink(missing_ok=True)  # left behind if a run stopped right after generator.json
        return out

    midlevel, emotions = make_annotations(controls, seed)
    files = sorted([_audio_name(k) for k in range(1, n_excerpts + 1)] + list(TEXT_FILES))
    table = correlation_table(midlevel, emotions)
    write_json(final, {
        "config": config, "config_hash": chash,
        "emotion_weights": emotion_weights().round(6).to_dict(orient="index"),
        "control_sd": control_sd(),
        "control_correlation": control_correlation().round(6).to_dict(orient="index"),
        "correlations": [{"emotion": e, "feature": f, "real": row.real,
                          "synthetic": None if math.isnan(row.synthetic) else row.synthetic}
                         for (e, f), row in table.iterrows()],
        "files": {name: file_sha256(out / name) for name in files},
    })
    partial.unlink(missing_ok=True)
    return out
