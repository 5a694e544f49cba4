"""The model of the synthetic Soundtracks dataset: controls, labels and their exact statistics (protocol §2.2).

:func:`sample_controls` draws 10 controls in [0, 1] per excerpt, the 7 mid-level features and 3 :data:`NUISANCE`
controls, each ``Phi(CONTROL_SPREAD * g)`` of a normal ``g`` that loads on three latent factors
(:data:`CONTROL_LOADINGS`), so that they correlate as on the real data. :func:`make_annotations` derives mid-level
ratings ``1 + 9 * control`` plus rater noise, and emotion ratings as a fixed linear map (:func:`emotion_weights`)
of the *true* standardised controls plus noise: two independent noisy views of the same music, like the real
data's two rater panels. Excerpt ``number`` draws everything from ``SeedSequence([seed, number])``: any excerpt can
be made alone, and the first k excerpts of a larger set equal a set of k.
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
    """``sample_rate`` as a Python int; :class:`MerError` unless it is an integer >= 8000 Hz (not a bool)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise MerError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    return int(sample_rate)


def _loading_matrix() -> np.ndarray:
    return np.array([CONTROL_LOADINGS[c] for c in CONTROLS], dtype=float)


def control_sd() -> float:
    """Population SD of every control ``Phi(k g)``, ``k = CONTROL_SPREAD``: ``sqrt(asin(k^2 / (1 + k^2)) / (2 pi))``."""
    k2 = CONTROL_SPREAD ** 2
    return math.sqrt(math.asin(k2 / (1 + k2)) / (2 * math.pi))


def control_correlation() -> pd.DataFrame:
    """Exact population correlation matrix of the controls, 10 x 10, indexed by :data:`CONTROLS`.

    For jointly normal ``g_i, g_j`` with correlation rho (from :data:`CONTROL_LOADINGS`),
    ``corr(Phi(k g_i), Phi(k g_j)) = asin(k^2 rho / (1+k^2)) / asin(k^2 / (1+k^2))``.
    """
    load = _loading_matrix()
    rho = load @ load.T
    np.fill_diagonal(rho, 1.0)
    k2 = CONTROL_SPREAD ** 2
    corr = np.arcsin(k2 * rho / (1 + k2)) / math.asin(k2 / (1 + k2))
    return pd.DataFrame(corr, index=list(CONTROLS), columns=list(CONTROLS))


def emotion_weights() -> pd.DataFrame:
    """The fixed linear map from standardised controls to the emotion latents: 8 emotions x 10 controls.

    Row ``e`` is ``sqrt(r2_e) * w_e / sd(w_e . z)`` (``w_e`` from :data:`EMOTION_LINKS`, ``r2_e`` from
    :data:`EMOTION_RATING`), so each latent ``y_e = W[e] . z + sqrt(1 - r2_e) * eps`` has unit variance.
    """
    corr = control_correlation().to_numpy()
    rows = []
    for emotion in EMOTIONS:
        w = np.array([EMOTION_LINKS[emotion].get(c, 0.0) for c in CONTROLS])
        rows.append(math.sqrt(EMOTION_RATING[emotion][0]) * w / math.sqrt(w @ corr @ w))
    return pd.DataFrame(rows, index=list(EMOTIONS), columns=list(CONTROLS))


def sample_controls(n_excerpts: int, seed: int) -> pd.DataFrame:
    """Draw the controls of ``n_excerpts`` (>= 1) excerpts; excerpt ``k`` uses the stream ``SeedSequence([seed, k])``.

    Returns a frame indexed by ``number`` = 1..n, columns :data:`CONTROLS`, values in (0, 1) rounded to 6 decimals.
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
    """Duration and render seed of excerpt ``number`` of a dataset of mean duration ``duration_s``.

    The duration is ``duration_s * U(1 - DURATION_JITTER, 1 + DURATION_JITTER)`` s, rounded to ms; the seed is the
    one to pass to :func:`mer_lib.data.synth.render.render_excerpt`.
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


def explained_latents(controls: pd.DataFrame) -> pd.DataFrame:
    """The part ``W z`` of the emotion latents that the controls explain (variance ``r2`` of :data:`EMOTION_RATING`)."""
    values = _check_controls_frame(controls).to_numpy(dtype=float)
    z = (values - 0.5) / control_sd()
    return pd.DataFrame(z @ emotion_weights().to_numpy().T, index=pd.Index([int(k) for k in controls.index],
                        name="number"), columns=list(EMOTIONS))


def emotion_latents(controls: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The unit-variance emotion latents ``y = W z + sqrt(1 - r2) eps`` behind the ratings (:func:`make_annotations`).

    ``eps`` is the part no control explains (a cue tracking it tells a model more than the music does).
    """
    seed = check_seed(seed)
    numbers = [int(k) for k in controls.index]
    eps = np.empty((len(numbers), len(EMOTIONS)))
    for i, number in enumerate(numbers):
        rng = excerpt_rng(seed, number, LABEL_STREAM)
        rng.standard_normal(len(MIDLEVEL))  # the rater noise of the mid-level annotations comes first
        eps[i] = rng.standard_normal(len(EMOTIONS))
    r2 = np.array([EMOTION_RATING[e][0] for e in EMOTIONS])
    return explained_latents(controls) + np.sqrt(1 - r2) * eps


def make_annotations(controls: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mid-level annotations and emotion ratings of the excerpts of ``controls`` (:func:`sample_controls`).

    Excerpt ``k``'s noise comes from ``SeedSequence([seed, k])``.

    Returns
    -------
    midlevel : pandas.DataFrame
        ``1 + 9 c`` plus rater noise (SD :data:`RATER_NOISE_SD`), clipped to [1, 10], 3 decimals.
    emotions : pandas.DataFrame
        :func:`emotion_weights` applied to the true standardised controls ``z = (c - 0.5) / control_sd()``, plus
        noise, clipped to [1, 9], 2 decimals.
    """
    seed = check_seed(seed)
    values = _check_controls_frame(controls).to_numpy(dtype=float)
    numbers = [int(k) for k in controls.index]
    rater = np.array([excerpt_rng(seed, number, LABEL_STREAM).standard_normal(len(MIDLEVEL)) for number in numbers])
    mid = 1.0 + 9.0 * values[:, :len(MIDLEVEL)] + RATER_NOISE_SD * rater.reshape(len(numbers), len(MIDLEVEL))
    mid = np.round(np.clip(mid, *MIDLEVEL_RANGE), 3)

    loc, scale = (np.array([EMOTION_RATING[e][j] for e in EMOTIONS]) for j in (1, 2))
    latent = emotion_latents(controls, seed).to_numpy()
    emo = np.round(np.clip(loc + scale * latent, *EMOTION_RANGE), 2)
    index = pd.Index(numbers, name="number")
    return (pd.DataFrame(mid, index=index, columns=list(MIDLEVEL)),
            pd.DataFrame(emo, index=index, columns=list(EMOTIONS)))


def correlation_table(midlevel: pd.DataFrame, emotions: pd.DataFrame) -> pd.DataFrame:
    """Synthetic vs real r of the pairs of :data:`REAL_CORRELATIONS`, from the two frames of :func:`make_annotations`.

    Indexed by (emotion, feature): ``real``, ``synthetic`` (Pearson r; NaN if either is constant), ``difference``.
    """
    rows = []
    for (emotion, feature), real in REAL_CORRELATIONS.items():
        x, y = emotions[emotion].to_numpy(float), midlevel[feature].to_numpy(float)
        # np.corrcoef, not mer_lib.metrics.pearson_per_column: switching could change the r recorded in the
        # generator.json of existing datasets (the two differ in the last bits and on some constant columns)
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) > 1 and x.std() > 0 and y.std() > 0 else math.nan
        rows.append((emotion, feature, real, round(r, 3), round(r - real, 3)))
    return pd.DataFrame(rows, columns=["emotion", "feature", "real", "synthetic", "difference"]
                        ).set_index(["emotion", "feature"])
