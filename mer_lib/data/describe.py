"""Descriptive statistics of a prepared dataset (notebook 01)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mer_lib.config import EMOTIONS, MIDLEVEL, TARGET_SCALE
from mer_lib.metrics import cross_correlation


def target_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, range and share of floor ratings of every target, on the rating scale.

    Parameters
    ----------
    table : pandas.DataFrame
        Prepared table with the 8 EMOTIONS and 7 MIDLEVEL columns (divided by 10).

    Returns
    -------
    pandas.DataFrame
        One row per target: ``kind``, ``mean``, ``sd``, ``min``, ``max`` (on the
        original 1-9 / 1-10 scales) and ``at_floor`` (share of ratings equal to 1.0).
    """
    rows = []
    for kind, names in (("emotion", EMOTIONS), ("mid-level", MIDLEVEL)):
        for name in names:
            v = table[name].to_numpy(dtype=np.float64) * TARGET_SCALE
            rows.append({"target": name, "kind": kind, "mean": v.mean(), "sd": v.std(ddof=1),
                         "min": v.min(), "max": v.max(), "at_floor": float(np.mean(np.isclose(v, 1.0)))})
    return pd.DataFrame(rows).set_index("target")


def target_correlations(table: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of every emotion (rows) with every mid-level feature (columns)."""
    r = cross_correlation(table[list(EMOTIONS)].to_numpy(np.float64), table[list(MIDLEVEL)].to_numpy(np.float64))
    return pd.DataFrame(r, index=list(EMOTIONS), columns=list(MIDLEVEL))


def reference_matrix(reference: Mapping[tuple[str, str], float]) -> pd.DataFrame:
    """The quoted real-data correlations as an emotions x features matrix (NaN where not quoted)."""
    out = pd.DataFrame(np.nan, index=list(EMOTIONS), columns=list(MIDLEVEL))
    for (emotion, feature), r in reference.items():
        out.loc[emotion, feature] = r
    return out


def compare_correlations(corr: pd.DataFrame, reference: Mapping[tuple[str, str], float]) -> pd.DataFrame:
    """Side by side: the quoted real-data r and the dataset's r for every quoted pair."""
    rows = [{"emotion": e, "feature": f, "real (quoted)": r, "this dataset": float(corr.loc[e, f])}
            for (e, f), r in reference.items()]
    out = pd.DataFrame(rows)
    out["difference"] = out["this dataset"] - out["real (quoted)"]
    return out
