"""Is the benchmark fair to the interpretable model? Accuracy targets and per-feature bottleneck quality.

As on the real data, A2M2E must give up little accuracy for its bottleneck, or the robustness comparison
compares a good model with a broken one. :func:`feature_quality` also asks whether the audio carries each feature.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from mer_lib.analysis.stats import sd_interval, t_interval
from mer_lib.config import MIDLEVEL
from mer_lib.errors import MerError

#: Default targets: A2E - A2M2E mean r at most 0.06; A2M2E's seed SD at most
#: 0.03; A2B2E between A2M2E and A2E, within 0.03 of that range.
MAX_GAP, MAX_SD, MARGIN = 0.06, 0.03, 0.03

#: Below this r a feature counts as not learned (and :func:`feature_quality` says why).
LEARNED_R = 0.4


def _within(low: float, high: float, lo_target: float, hi_target: float) -> str:
    """``holds`` inside the target range, ``fails`` outside it, else ``inconclusive`` (``undecided`` for NaN)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undecided"
    if lo_target <= low and high <= hi_target:
        return "holds"
    if high < lo_target or low > hi_target:
        return "fails"
    return "inconclusive"


def _seed_table(metrics: pd.DataFrame, split: str) -> pd.DataFrame:
    missing = [c for c in ("system", "seed", "split", "mean_r") if c not in metrics.columns]
    if missing:
        raise MerError(f"fidelity_targets: the metrics table lacks columns {missing}")
    rows = metrics[metrics["split"] == split]
    absent = [s for s in ("A2E", "A2B2E", "A2M2E") if s not in set(rows["system"])]
    if absent:
        raise MerError(f"fidelity_targets: no {split} results for {absent}")
    r = rows.pivot_table(index="seed", columns="system", values="mean_r", dropna=False)
    return r[["A2E", "A2B2E", "A2M2E"]].dropna()


QUANTITIES = ("A2E mean r", "A2B2E mean r", "A2M2E mean r", "A2E - A2M2E mean r (paired by seed)",
              "seed SD of A2M2E mean r", "A2B2E mean r, between A2M2E and A2E")
COLUMNS = ["quantity", "estimate", "ci_low", "ci_high", "target", "meets", "verdict"]


def fidelity_targets(metrics: pd.DataFrame, split: str = "test", max_gap: float = MAX_GAP,
                     max_sd: float = MAX_SD, margin: float = MARGIN, level: float = 0.95,
                     n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Does A2M2E reach about A2E's accuracy, reliably? The benchmark's accuracy targets, with CIs over seeds.

    Parameters
    ----------
    metrics : pandas.DataFrame
        :func:`mer_lib.models.tables.metrics_table` of the emotions (``system``, ``seed``, ``split``, ``mean_r``),
        A2E, A2B2E and A2M2E trained on the same seeds.
    max_gap, max_sd, margin : float
        The targets (:data:`MAX_GAP`, :data:`MAX_SD`, :data:`MARGIN`).
    n_boot, seed : int
        Unused (uniform signature): t-intervals over seeds, the chi-square interval for the SD.

    Returns
    -------
    pandas.DataFrame
        Per quantity: ``quantity``, ``estimate``, ``ci_low``, ``ci_high``, ``target``, ``meets`` (the estimate does),
        ``verdict`` (``holds``: the whole interval meets it, ``fails``: misses it, else ``inconclusive``). The gap is
        paired by seed. Fewer than 2 seeds with r defined for all three systems give NaN and ``undecided``.

    Raises
    ------
    MerError
        If a column is missing or a system has no results on ``split``.
    """
    r = _seed_table(metrics, split)
    if len(r) < 2:
        return pd.DataFrame([(q, np.nan, np.nan, np.nan, "", None, "undecided") for q in QUANTITIES],
                            columns=COLUMNS)
    rows = []
    for system in ("A2E", "A2B2E", "A2M2E"):
        low, high = t_interval(r[system].to_numpy(), level)
        rows.append((f"{system} mean r", r[system].mean(), low, high, "", None, ""))
    gap = (r["A2E"] - r["A2M2E"]).to_numpy()
    low, high = t_interval(gap, level)
    rows.append(("A2E - A2M2E mean r (paired by seed)", gap.mean(), low, high, f"<= {max_gap}",
                 gap.mean() <= max_gap, _within(low, high, -np.inf, max_gap)))
    sd = float(np.std(r["A2M2E"], ddof=1))
    low, high = sd_interval(r["A2M2E"].to_numpy(), level)
    rows.append(("seed SD of A2M2E mean r", sd, low, high, f"<= {max_sd}", sd <= max_sd,
                 _within(low, high, 0.0, max_sd)))
    lo_t, hi_t = r["A2M2E"].mean() - margin, r["A2E"].mean() + margin
    b2e = r["A2B2E"].to_numpy()
    low, high = t_interval(b2e, level)
    rows.append(("A2B2E mean r, between A2M2E and A2E", b2e.mean(), low, high,
                 f"in [{lo_t:.3f}, {hi_t:.3f}]", bool(lo_t <= b2e.mean() <= hi_t), _within(low, high, lo_t, hi_t)))
    return pd.DataFrame(rows, columns=COLUMNS)


def _mean_ci(values: np.ndarray, level: float) -> tuple[float, float, float]:
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return (float(values.mean()) if len(values) else np.nan), np.nan, np.nan
    low, high = t_interval(values, level)
    return float(values.mean()), low, high


def _why(unit_r: float, probe_r: float) -> str:
    if unit_r >= LEARNED_R:
        return ""
    if np.isfinite(probe_r) and probe_r >= LEARNED_R:
        return (f"the audio carries it (A2E's embedding predicts it, probe r {probe_r:.2f}), "
                "but A2M2E's unit does not carry it in this budget")
    return "neither model recovers it from the audio in this budget" + (
        f" (A2E probe r {probe_r:.2f})" if np.isfinite(probe_r) else "")


def feature_quality(agreement: pd.DataFrame, probe: pd.DataFrame | None = None, system: str = "A2M2E",
                    level: float = 0.95) -> pd.DataFrame:
    """Per mid-level feature: how well the bottleneck of ``system`` learned it, with CIs over seeds, and why not.

    Parameters
    ----------
    agreement : pandas.DataFrame
        :func:`mer_lib.analysis.bottleneck.bottleneck_agreement` rows.
    probe : pandas.DataFrame, optional
        :func:`mer_lib.analysis.bottleneck.embedding_probe` rows of A2E, to explain a feature below :data:`LEARNED_R`.

    Returns
    -------
    pandas.DataFrame
        By feature: ``r_annotations``, ``ci_low``, ``ci_high``, ``r_controls`` (NaN without ground truth),
        ``probe_r_annotations``, ``learned`` (``r_annotations >= LEARNED_R``) and ``why_not``.
    """
    ours = agreement[agreement["system"] == system]
    if ours.empty:
        raise MerError(f"feature_quality: no bottleneck agreement rows for {system}")
    rows = []
    for feature in MIDLEVEL:
        r_ann = ours.loc[ours["against"] == "annotations", feature].to_numpy(float)
        r_ctl = ours.loc[ours["against"] == "controls", feature].to_numpy(float)
        mean, low, high = _mean_ci(r_ann, level)
        probe_r = np.nan
        if probe is not None and not probe.empty:
            probe_r = float(probe.loc[probe["against"] == "annotations", feature].mean())
        rows.append({"feature": feature, "r_annotations": mean, "ci_low": low, "ci_high": high,
                     "r_controls": float(r_ctl.mean()) if len(r_ctl) else np.nan,
                     "probe_r_annotations": probe_r, "learned": bool(mean >= LEARNED_R),
                     "why_not": _why(mean, probe_r)})
    return pd.DataFrame(rows).set_index("feature")
