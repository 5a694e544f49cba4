"""A deterministic synthetic Soundtracks dataset (protocol §2.2).

Neither Soundtracks Set 1 nor the mid-level annotations can be downloaded
here, so this module *writes* a stand-in in exactly their on-disk formats
(protocol §2.1); the pipeline then reads it through the same loader
(:func:`mer_lib.data.loader.load_soundtracks`)::

    out_dir/Set1/001.wav ...                      16-bit PCM, mono, 22050 Hz
    out_dir/mean_ratings_set1.csv                 emotion ratings 1-9
    out_dir/metadata_annotations/metadata.csv     ';' separated, song id -> Set-1 number
    out_dir/metadata_annotations/annotations.csv  mid-level ratings 1-10, by song id
    out_dir/synthetic/controls.csv                ground truth: latent controls per excerpt
    out_dir/synthetic/generator.json              parameters, weights, hash; written last

How it works
------------
1. :func:`sample_controls` draws, per excerpt, 10 musical controls in [0, 1]:
   the 7 mid-level features (:data:`~mer_lib.config.MIDLEVEL`) and 3
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

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from mer_lib.config import EMOTION_RANGE, EMOTIONS, MIDLEVEL, MIDLEVEL_RANGE
from mer_lib.errors import MerError

#: 1.1.0: the mode is chosen per 2 chords and spread evenly (minorness audible in any 10-s window).
GENERATOR_VERSION = "1.1.0"


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
CONTROL_STREAM, RENDER_STREAM, LABEL_STREAM = 0, 1, 2


_N_STREAMS = 3


# --------------------------------------------------------------------------- controls and labels
def excerpt_rng(seed: int, number: int, stream: int) -> np.random.Generator:
    """The generator of one sub-stream of excerpt ``number``."""
    return np.random.default_rng(np.random.SeedSequence([seed, number]).spawn(_N_STREAMS)[stream])


def _check_int(value: Any, name: str, minimum: int, kind: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise MerError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as a Python int; :class:`MerError` naming ``name`` unless it is an integer >= 0 (not a bool)."""
    return _check_int(seed, name, 0, "non-negative")


def check_count(value: Any, name: str) -> int:
    """``value`` (a count such as ``n_excerpts``) as a Python int; :class:`MerError` naming ``name`` unless >= 1."""
    return _check_int(value, name, 1, "positive")


def check_sample_rate(sample_rate: Any) -> int:
    """Validate a sample rate.

    Parameters
    ----------
    sample_rate : int
        Sample rate in Hz (``bool`` is refused).

    Returns
    -------
    int
        ``sample_rate`` as a Python int.

    Raises
    ------
    MerError
        If ``sample_rate`` is not an integer >= 8000.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise MerError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    return int(sample_rate)


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
    seed = check_seed(seed)
    n_excerpts = check_count(n_excerpts, "n_excerpts")
    load = _loading_matrix()
    unique = np.sqrt(1.0 - (load ** 2).sum(axis=1))
    g = np.empty((n_excerpts, len(CONTROLS)))
    for i in range(n_excerpts):
        rng = excerpt_rng(seed, i + 1, CONTROL_STREAM)
        g[i] = load @ rng.standard_normal(len(LATENT_FACTORS)) + unique * rng.standard_normal(len(CONTROLS))
    index = pd.RangeIndex(1, n_excerpts + 1, name="number")
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
    rng = excerpt_rng(check_seed(seed), int(number), RENDER_STREAM)
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
        :data:`~mer_lib.config.MIDLEVEL` columns, ``1 + 9 c`` plus rater
        noise (SD :data:`RATER_NOISE_SD`), clipped to [1, 10], 3 decimals.
    emotions : pandas.DataFrame
        :data:`~mer_lib.config.EMOTIONS` columns, clipped to [1, 9], 2
        decimals. Computed from the *true* standardised controls
        ``z = (c - 0.5) / control_sd()`` (equal to the standardised
        noise-free mid-level values) with :func:`emotion_weights`.
    """
    seed = check_seed(seed)
    values = _check_controls_frame(controls).to_numpy(dtype=float)
    numbers = [int(k) for k in controls.index]
    rater = np.empty((len(numbers), len(MIDLEVEL)))
    eps = np.empty((len(numbers), len(EMOTIONS)))
    for i, number in enumerate(numbers):
        rng = excerpt_rng(seed, number, LABEL_STREAM)
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

    Parameters
    ----------
    midlevel, emotions : pandas.DataFrame
        As returned by :func:`make_annotations` (same excerpts, same order).

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
        # np.corrcoef, not mer_lib.metrics.pearson_per_column: the two differ in the last bits (another
        # summation order) and on constant columns whose mean is inexact (r = 0 here, NaN there), so
        # switching could change the r recorded in the generator.json of existing datasets
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else math.nan
        rows.append((emotion, feature, real, round(r, 3), round(r - real, 3)))
    return pd.DataFrame(rows, columns=["emotion", "feature", "real", "synthetic", "difference"]
                        ).set_index(["emotion", "feature"])
