"""Descriptive statistics of a prepared dataset (notebook 01)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

import numpy as np
import pandas as pd

from mer_lib.config import EMOTIONS, MIDLEVEL, TARGET_SCALE
from mer_lib.data.cache import PreparedData
from mer_lib.data.layout import SET1_NUMBERS, audio_stem
from mer_lib.metrics import cross_correlation

_MAX_NOTED = 20


def _names(items: list[str], limit: int = _MAX_NOTED) -> str:
    """``a, b, c`` or ``a, b, ... (N more)``; ``"-"`` for none."""
    text = ", ".join(items[:limit]) or "-"
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def dataset_notes(prepared: PreparedData) -> pd.DataFrame:
    """What a reader of the prepared data (:func:`mer_lib.data.stage.prepare_data`) should know that is not an error.

    Returns
    -------
    pandas.DataFrame
        Columns ``note``, ``count`` and ``files``: always the unrated audio files (not loaded) and the files shorter
        than the excerpt (wrap-padded); when ``prepared.comparable_with_published`` is False, also the missing and
        extra Set-1 numbers (results not comparable with the published runs).
    """
    table, excerpt_frames = prepared.table, prepared.excerpt_frames
    unrated = [PurePath(p).name for p in prepared.unrated_audio]
    short = table[table["frames"] < excerpt_frames]
    short_names = [f"{PurePath(p).name} ({f} frames)" for p, f in zip(short["audio_path"], short["frames"])]
    rows = [("audio files without ratings or mid-level annotations (not loaded)", len(unrated), _names(unrated)),
            (f"files shorter than the {excerpt_frames}-frame excerpt (padded by wrapping around)", len(short),
             _names(short_names))]
    if prepared.comparable_with_published is False:
        missing = [audio_stem(n) for n in sorted(set(SET1_NUMBERS) - set(table.index))]
        extra = [audio_stem(n) for n in sorted(set(table.index) - set(SET1_NUMBERS))]
        listed = [f"missing: {_names(missing)}"] if missing else []
        listed += [f"not in Set 1: {_names(extra)}"] if extra else []
        rows.append((f"not the {len(SET1_NUMBERS)} Set-1 excerpts (allow_subset=True): results not comparable "
                     "with the published runs", len(missing) + len(extra), "; ".join(listed)))
    return pd.DataFrame(rows, columns=["note", "count", "files"])


def target_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Summary of every target on its original 1-9 / 1-10 scale, indexed by ``target``.

    Columns ``kind``, ``mean``, ``sd``, ``min``, ``max`` and ``at_floor`` (share of ratings equal to 1.0).
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
