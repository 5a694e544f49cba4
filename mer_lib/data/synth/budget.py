"""How learnable the synthetic emotions are: the generator's variance budget and linear ceilings.

:func:`variance_budget` splits each emotion's latent variance exactly into mid-level, :data:`NUISANCE` (usable only
by a black box) and noise; :func:`linear_ceiling` measures the cross-validated r a perfect model reaches.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.data.synth.cue import CueConfig, cue_angle
from mer_lib.data.synth.model import (
    CONTROLS,
    NUISANCE,
    REAL_CORRELATIONS,
    control_correlation,
    emotion_weights,
)
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column

#: Predictor sets of :func:`linear_ceiling`: column name -> what is used.
CEILING_INPUTS: dict[str, str] = {
    "annotations": "the 7 mid-level annotations (a perfect A2M2E bottleneck)",
    "midlevel_controls": "the 7 true mid-level controls (no rater noise)",
    "all_controls": "all 10 controls, nuisance included (what a black box can hear)",
}


def variance_budget(cue: CueConfig | None = None) -> pd.DataFrame:
    """Exact shares of each emotion latent's variance, from the generator's constants.

    Parameters
    ----------
    cue : CueConfig, optional
        A cue world (:mod:`mer_lib.data.synth.cue`): its emotion's ``cue`` share is what the cue latent adds to all
        controls, taken from the noise: all of it unless the cue leans on the explained part alone.

    Returns
    -------
    pandas.DataFrame
        Indexed by emotion: ``midlevel`` (best linear map of the 7 mid-level controls), ``nuisance`` (added by
        :data:`NUISANCE`), ``cue`` (with a cue only) and ``noise``, summing to 1; ``r_midlevel = sqrt(midlevel)``, the r
        of a perfect mid-level model on the unclipped latent; ``real_single_feature_r2``, the largest squared real r
        of one annotation (:data:`REAL_CORRELATIONS`; NaN if none), a lower bound of the real data's mid-level share.
    """
    corr = control_correlation().to_numpy()
    weights = emotion_weights().to_numpy()
    k = len(MIDLEVEL)
    rows = []
    for emotion, w in zip(EMOTIONS, weights):
        explained = float(w @ corr @ w)
        cov = corr[:k] @ w
        midlevel = float(cov @ np.linalg.solve(corr[:k, :k], cov))
        real = [r ** 2 for (e, _), r in REAL_CORRELATIONS.items() if e == emotion]
        added = 0.0
        if cue is not None and cue.emotion == emotion:
            added = (1.0 - explained) if abs(math.sin(cue_angle(cue))) > 1e-12 else 0.0
        rows.append({"emotion": emotion, "midlevel": midlevel, "nuisance": explained - midlevel,
                     **({} if cue is None else {"cue": added}), "noise": 1.0 - explained - added,
                     "r_midlevel": np.sqrt(midlevel),
                     "real_single_feature_r2": max(real) if real else np.nan})
    return pd.DataFrame(rows).set_index("emotion")


def _fold_predictions(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold predictions of an ordinary least-squares fit with intercept."""
    out = np.empty_like(y)
    for fold in np.unique(folds):
        test = folds == fold
        design = np.c_[np.ones((~test).sum()), x[~test]]
        beta = np.linalg.lstsq(design, y[~test], rcond=None)[0]
        out[test] = np.c_[np.ones(test.sum()), x[test]] @ beta
    return out


def linear_ceiling(emotions: pd.DataFrame, midlevel: pd.DataFrame, controls: pd.DataFrame,
                   n_folds: int = 10, seed: int = 0) -> pd.DataFrame:
    """Cross-validated r of linear maps to the emotion ratings (clipping included), per emotion and predictor set.

    Parameters
    ----------
    emotions, midlevel, controls : pandas.DataFrame
        Ratings (:data:`~mer_lib.config.EMOTIONS`), annotations (:data:`~mer_lib.config.MIDLEVEL`) and the
        generator's :data:`CONTROLS`, indexed alike by excerpt.
    n_folds, seed : int
        Number of folds and seed of the random fold assignment.

    Returns
    -------
    pandas.DataFrame
        Indexed by emotion plus a ``mean`` row, one column per :data:`CEILING_INPUTS` key: r of the out-of-fold
        predictions. ``all_controls`` minus ``annotations`` is what A2M2E gives up even with a perfect bottleneck.

    Raises
    ------
    MerError
        If a column is missing, the indexes differ, or there are fewer than ``2 * n_folds`` excerpts.
    """
    for frame, columns, what in ((emotions, EMOTIONS, "emotions"), (midlevel, MIDLEVEL, "midlevel"),
                                 (controls, CONTROLS, "controls")):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise MerError(f"linear_ceiling: {what} lacks columns {missing}")
        if not frame.index.equals(emotions.index):
            raise MerError(f"linear_ceiling: {what} is not indexed like the emotions (same excerpts, same order)")
    if len(emotions) < 2 * n_folds:
        raise MerError(f"linear_ceiling: need at least {2 * n_folds} excerpts for {n_folds} folds, "
                       f"got {len(emotions)}")
    folds = np.random.default_rng(seed).permutation(np.arange(len(emotions)) % n_folds)
    y = emotions[list(EMOTIONS)].to_numpy(np.float64)
    inputs = {"annotations": midlevel[list(MIDLEVEL)], "midlevel_controls": controls[list(MIDLEVEL)],
              "all_controls": controls[[*MIDLEVEL, *NUISANCE]]}
    table = pd.DataFrame({name: pearson_per_column(y, _fold_predictions(x.to_numpy(np.float64), y, folds))
                          for name, x in inputs.items()}, index=pd.Index(EMOTIONS, name="emotion"))
    table.loc["mean"] = table.mean()
    return table
