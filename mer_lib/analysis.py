"""The paper's analysis (protocol §7), computed from attack logs.

Every function takes a *tidy table of attack logs*: one row per attacked test
excerpt, with the columns ``system``, ``seed``, ``number`` and the columns of
:func:`mer_lib.attack_logs.read_attack_log` (``true_*``, ``orig_*``,
``new_*`` for the 8 emotions, ``iterations``, ``norm``, ...). Any mix of
systems and seeds works: :func:`mer_lib.attack_logs.read_published_runs`
returns such a table for the authors' 50 published logs, and the project's own
runs produce the same columns (plus ``snr_db`` for bounded attacks).

One *model* is one (system, seed) pair. Predictions and labels are on the
logs' scale (ratings divided by 10), so MAE values are on that scale too.

Functions here are pure (DataFrame in, DataFrame out); only
:func:`save_table` writes files. Nothing depends on :mod:`mer_lib.metrics`:
the few formulas needed are written out below and tested against scipy.

Conventions
-----------
- Average Pearson r (Table 1): r of one emotion is computed across the
  model's test excerpts, then the 8 values are averaged. An emotion whose
  labels or predictions are constant over the excerpts has no defined r; it
  is left out of the average (a NaN-ignoring mean) and the number of emotions
  that entered the average is reported beside it (``clean_r_emotions``,
  ``adv_r_emotions``). If no emotion has a defined r the average is NaN.
- Spread over seeds is the sample standard deviation (``ddof=1``); it is NaN
  for a system with a single seed.
- Paired differences are always "first system minus second system".
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from mer_lib import artifacts
from mer_lib.attack_logs import tidy_columns
from mer_lib.constants import EMOTIONS, SYSTEMS
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column

__all__ = [
    "MODEL_KEYS", "DEFAULT_PAIRS", "system_order", "pearson_per_column", "average_pearson",
    "per_emotion_pearson", "per_model_metrics", "table1", "dmae_summary", "per_excerpt_mae",
    "bootstrap_ci", "cohens_d_paired", "paired_ttests", "paper_findings", "perturbation_stats",
    "table_to_markdown", "table_to_latex", "save_table",
]

#: Columns identifying one attacked model.
MODEL_KEYS: tuple[str, str] = ("system", "seed")
#: The comparisons of the paper's t-tests (protocol §7).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("A2E", "A2M2E"), ("A2B2E", "A2M2E"))
_PREDICTION_KINDS = ("orig", "new")


# --------------------------------------------------------------------------- helpers
def _require(logs: pd.DataFrame, columns: Iterable[str], what: str = "attack logs") -> None:
    if not isinstance(logs, pd.DataFrame):
        raise MerError(f"{what}: expected a pandas DataFrame, got {type(logs).__name__}")
    missing = [c for c in columns if c not in logs.columns]
    if missing:
        raise MerError(f"{what}: missing columns {missing}; found {list(logs.columns)}")
    if logs.empty:
        raise MerError(f"{what}: the table is empty")


def _check_kind(which: str) -> None:
    if which not in _PREDICTION_KINDS:
        raise MerError(f"which={which!r}: expected 'orig' (clean predictions) or 'new' (after the attack)")


def _check_unique_excerpts(logs: pd.DataFrame) -> None:
    dup = logs.duplicated(subset=[*MODEL_KEYS, "number"], keep=False)
    if dup.any():
        first = logs.loc[dup, [*MODEL_KEYS, "number"]].iloc[0].to_dict()
        raise MerError(f"attack logs: {int(dup.sum())} rows repeat a (system, seed, number) key, e.g. {first}; "
                       "each model must list every excerpt once (were two logs of the same run concatenated?)")


def _log_columns(which: str) -> list[str]:
    return [*MODEL_KEYS, "number", *tidy_columns("true"), *tidy_columns(which)]


def system_order(systems: Iterable[str]) -> list[str]:
    """Sort system names: the paper's order (:data:`SYSTEMS`) first, then any others alphabetically.

    Parameters
    ----------
    systems : iterable of str
        System names, possibly repeated.

    Returns
    -------
    list of str
        The distinct names, ordered.
    """
    present = set(systems)
    known = [s for s in SYSTEMS if s in present]
    return known + sorted(present - set(SYSTEMS))


def _sort_models(df: pd.DataFrame, by_system: str = "system") -> pd.DataFrame:
    rank = {s: i for i, s in enumerate(system_order(df[by_system]))}
    keys = [by_system] + [c for c in ("seed", "number") if c in df.columns]
    return (df.assign(_rank=df[by_system].map(rank))
              .sort_values(["_rank", *keys[1:]], kind="stable")
              .drop(columns="_rank").reset_index(drop=True))


# --------------------------------------------------------------------------- correlation
def average_pearson(true: np.ndarray, pred: np.ndarray) -> float:
    """Average over columns of the per-column Pearson r, ignoring undefined columns.

    Parameters
    ----------
    true, pred : array_like, shape (n, k)

    Returns
    -------
    float
        Mean of the defined per-column r values (see :func:`pearson_per_column`);
        NaN if none is defined.
    """
    r = pearson_per_column(true, pred)
    return float(np.mean(r[~np.isnan(r)])) if (~np.isnan(r)).any() else float("nan")


def per_emotion_pearson(logs: pd.DataFrame, which: str = "orig") -> pd.DataFrame:
    """Pearson r per model and emotion.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs (see the module docstring).
    which : {"orig", "new"}
        Clean predictions or predictions after the attack.

    Returns
    -------
    pandas.DataFrame
        Columns ``system``, ``seed`` and one column per emotion (NaN where the
        emotion's r is undefined), one row per model.
    """
    _check_kind(which)
    _require(logs, _log_columns(which))
    _check_unique_excerpts(logs)
    rows = []
    for (system, seed), g in logs.groupby(list(MODEL_KEYS), sort=False):
        r = pearson_per_column(g[tidy_columns("true")].to_numpy(), g[tidy_columns(which)].to_numpy())
        rows.append({"system": system, "seed": seed, **dict(zip(EMOTIONS, r))})
    return _sort_models(pd.DataFrame(rows))


# --------------------------------------------------------------------------- per model
def _abs_errors(logs: pd.DataFrame, which: str) -> np.ndarray:
    return np.abs(logs[tidy_columns(which)].to_numpy(np.float64) - logs[tidy_columns("true")].to_numpy(np.float64))


def per_model_metrics(logs: pd.DataFrame) -> pd.DataFrame:
    """Clean and adversarial performance of every model (system, seed).

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs with ``system``, ``seed``, ``number``, ``true_*``,
        ``orig_*`` and ``new_*`` columns.

    Returns
    -------
    pandas.DataFrame
        One row per model, systems in the paper's order, then by seed:

        ``n_excerpts``
            test excerpts of the model.
        ``clean_r``, ``adv_r``
            average Pearson r over the emotions (r per emotion across the
            excerpts, then averaged; undefined emotions left out) of the clean
            predictions and of the predictions after the attack.
        ``clean_r_emotions``, ``adv_r_emotions``
            how many emotions entered each average (8 unless some r is undefined).
        ``clean_mae``, ``adv_mae``
            mean over excerpts and emotions of ``|orig - true|`` and ``|new - true|``.
        ``dmae``
            ``adv_mae - clean_mae`` (the paper's robustness measure; larger is
            less robust).

    Raises
    ------
    MerError
        On missing columns or a repeated (system, seed, number).
    """
    _require(logs, [*MODEL_KEYS, "number", *tidy_columns("true"), *tidy_columns("orig"), *tidy_columns("new")])
    _check_unique_excerpts(logs)
    rows = []
    for (system, seed), g in logs.groupby(list(MODEL_KEYS), sort=False):
        true = g[tidy_columns("true")].to_numpy(np.float64)
        row = {"system": system, "seed": seed, "n_excerpts": len(g)}
        for kind, name in (("orig", "clean"), ("new", "adv")):
            pred = g[tidy_columns(kind)].to_numpy(np.float64)
            r = pearson_per_column(true, pred)
            row[f"{name}_r"] = float(np.mean(r[~np.isnan(r)])) if (~np.isnan(r)).any() else float("nan")
            row[f"{name}_r_emotions"] = int((~np.isnan(r)).sum())
            row[f"{name}_mae"] = float(np.mean(np.abs(pred - true)))
        row["dmae"] = row["adv_mae"] - row["clean_mae"]
        rows.append(row)
    cols = ["system", "seed", "n_excerpts", "clean_r", "clean_mae", "adv_r", "adv_mae", "dmae",
            "clean_r_emotions", "adv_r_emotions"]
    return _sort_models(pd.DataFrame(rows)[cols])


def _as_per_model(data: pd.DataFrame, needed: Sequence[str]) -> pd.DataFrame:
    """Accept either attack logs or the output of :func:`per_model_metrics`."""
    if isinstance(data, pd.DataFrame) and set(needed) <= set(data.columns) and "number" not in data.columns:
        _require(data, [*MODEL_KEYS, *needed], "per-model table")
        if data.duplicated(subset=list(MODEL_KEYS)).any():
            raise MerError("per-model table: a (system, seed) pair appears more than once")
        return data
    return per_model_metrics(data)


def _format_mean_std(mean: float, std: float, decimals: int) -> str:
    if np.isnan(mean):
        return "n/a"
    if np.isnan(std):
        return f"{mean:.{decimals}f} ± n/a"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def table1(logs: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """Table 1 of the paper: clean performance per system, mean ± std over seeds.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs, or the output of :func:`per_model_metrics` (recognised
        by its ``clean_r``/``clean_mae`` columns and the absence of ``number``).
    decimals : int
        Decimals of the formatted string columns.

    Returns
    -------
    pandas.DataFrame
        One row per system present, in the paper's order: ``system``,
        ``n_seeds``, ``r_mean``, ``r_std``, ``mae_mean``, ``mae_std`` (std over
        seeds with ``ddof=1``; NaN for a single seed) and the formatted
        ``r (mean ± std)`` and ``MAE (mean ± std)``.
    """
    pm = _as_per_model(logs, ["clean_r", "clean_mae"])
    rows = []
    for system in system_order(pm["system"]):
        g = pm[pm["system"] == system]
        r, m = g["clean_r"].to_numpy(np.float64), g["clean_mae"].to_numpy(np.float64)
        r_std = float(np.std(r, ddof=1)) if len(r) > 1 else float("nan")
        m_std = float(np.std(m, ddof=1)) if len(m) > 1 else float("nan")
        rows.append({"system": system, "n_seeds": int(g["seed"].nunique()),
                     "r_mean": float(np.mean(r)), "r_std": r_std,
                     "mae_mean": float(np.mean(m)), "mae_std": m_std,
                     "r (mean ± std)": _format_mean_std(float(np.mean(r)), r_std, decimals),
                     "MAE (mean ± std)": _format_mean_std(float(np.mean(m)), m_std, decimals)})
    return pd.DataFrame(rows)


def dmae_summary(logs: pd.DataFrame) -> pd.DataFrame:
    """Distribution of dMAE over the models of each system (the numbers behind Figure 3).

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs or the output of :func:`per_model_metrics`.

    Returns
    -------
    pandas.DataFrame
        Per system (paper order): ``n_models``, ``median``, ``q25``, ``q75``,
        ``mean``, ``std`` (ddof=1), ``min``, ``max`` of ``dmae``, and
        ``clean_mae_median``, ``adv_mae_median``.
    """
    pm = _as_per_model(logs, ["dmae", "clean_mae", "adv_mae"])
    rows = []
    for system in system_order(pm["system"]):
        g = pm[pm["system"] == system]
        d = g["dmae"].to_numpy(np.float64)
        q25, med, q75 = np.quantile(d, [0.25, 0.5, 0.75])
        rows.append({"system": system, "n_models": len(d), "median": float(med), "q25": float(q25),
                     "q75": float(q75), "mean": float(d.mean()),
                     "std": float(np.std(d, ddof=1)) if len(d) > 1 else float("nan"),
                     "min": float(d.min()), "max": float(d.max()),
                     "clean_mae_median": float(g["clean_mae"].median()),
                     "adv_mae_median": float(g["adv_mae"].median())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- per excerpt, tests
def per_excerpt_mae(logs: pd.DataFrame, which: str = "new") -> pd.DataFrame:
    """MAE over the 8 emotions of every attacked excerpt.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs.
    which : {"new", "orig"}
        ``"new"``: predictions after the attack; ``"orig"``: clean predictions.

    Returns
    -------
    pandas.DataFrame
        Columns ``system``, ``seed``, ``number``, ``mae``; one row per excerpt,
        sorted by system (paper order), seed and number.
    """
    _check_kind(which)
    _require(logs, _log_columns(which))
    _check_unique_excerpts(logs)
    out = logs[[*MODEL_KEYS, "number"]].copy()
    out["mae"] = _abs_errors(logs, which).mean(axis=1)
    return _sort_models(out)


def bootstrap_ci(values: np.ndarray, stat: Callable[..., float] = np.mean, n_boot: int = 10_000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic of one sample.

    Parameters
    ----------
    values : array_like, shape (n,)
        The sample (for paired data: the per-pair differences, so that pairs
        are resampled together).
    stat : callable
        Statistic of a 1-d sample. If it accepts ``axis=`` (like ``np.mean``,
        ``np.median``) all resamples are evaluated at once; otherwise one by one.
    n_boot : int
        Number of bootstrap resamples.
    seed : int
        Seed of the resampling (``numpy.random.default_rng``); same inputs and
        seed give the same interval.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    (float, float)
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
        bootstrap distribution of ``stat``.

    Raises
    ------
    MerError
        For fewer than 2 values, NaNs, or invalid ``n_boot``/``level``.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2:
        raise MerError(f"bootstrap_ci: need at least 2 values, got {x.size}")
    if np.isnan(x).any():
        raise MerError("bootstrap_ci: the values contain NaN")
    if not (0.0 < level < 1.0):
        raise MerError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise MerError(f"bootstrap_ci: n_boot must be a positive integer, got {n_boot}")
    rng = np.random.default_rng(seed)
    n_boot, n = int(n_boot), x.size
    chunk = max(1, 2_000_000 // n)  # bound the memory of one block of resamples
    boot = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        samples = x[rng.integers(0, n, size=(stop - start, n))]
        try:
            block = np.asarray(stat(samples, axis=1), dtype=np.float64)
        except TypeError:
            block = None
        if block is None or block.shape != (stop - start,):
            block = np.array([stat(s) for s in samples], dtype=np.float64)
        boot[start:stop] = block
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def cohens_d_paired(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d for paired samples (often called d_z): mean(a - b) / SD(a - b), SD with ddof=1.

    Parameters
    ----------
    a, b : array_like, shape (n,)
        Paired observations.

    Returns
    -------
    float
        The standardised mean difference; NaN if all differences are equal.
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        raise MerError(f"cohens_d_paired: need at least 2 pairs, got {d.size}")
    sd = float(np.std(d, ddof=1))
    return float(np.mean(d) / sd) if sd > 0 else float("nan")


def _paired_values(per_excerpt: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    systems = set(per_excerpt["system"])
    for s in (a, b):
        if s not in systems:
            raise MerError(f"paired test {a} vs {b}: no attack logs of system {s!r}; present: {system_order(systems)}")
    left = per_excerpt[per_excerpt["system"] == a][["seed", "number", "mae"]]
    right = per_excerpt[per_excerpt["system"] == b][["seed", "number", "mae"]]
    merged = left.merge(right, on=["seed", "number"], how="outer", suffixes=("_a", "_b"), indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    if len(unmatched):
        only_a = unmatched[unmatched["_merge"] == "left_only"][["seed", "number"]]
        only_b = unmatched[unmatched["_merge"] == "right_only"][["seed", "number"]]
        example = unmatched[["seed", "number"]].head(3).to_dict("records")
        raise MerError(f"paired test {a} vs {b}: pairs do not align on (seed, number): {len(only_a)} excerpts "
                       f"only in {a}, {len(only_b)} only in {b} (e.g. {example}); both systems need logs for "
                       "the same seeds and the same test excerpts")
    return merged.sort_values(["seed", "number"], kind="stable").reset_index(drop=True)


def paired_ttests(logs: pd.DataFrame, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS, which: str = "new",
                  n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Paired t-tests of per-excerpt MAE between systems, pooled over seeds (protocol §7).

    For each pair ``(a, b)`` the per-excerpt MAE (:func:`per_excerpt_mae`) of
    system ``a`` is paired with that of system ``b`` on the same seed and
    excerpt (36 excerpts x 10 seeds = 360 pairs on the published runs), and
    :func:`scipy.stats.ttest_rel` (two-sided) is applied, as in the paper.
    Beside it: Cohen's d for paired samples and a percentile bootstrap CI of
    the mean difference that resamples pairs. Note that the pairs are not
    independent (the same excerpts recur for every seed); the t-test of the
    paper and this bootstrap both ignore that clustering.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs.
    pairs : sequence of (str, str)
        System pairs; the difference is always ``a - b``.
    which : {"new", "orig"}
        MAE after the attack (the paper's test) or on clean data.
    n_boot, seed, level
        Passed to :func:`bootstrap_ci`; the same ``seed`` is used for every pair.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``a``, ``b``, ``n_pairs``, ``mean_a``, ``mean_b``,
        ``mean_diff``, ``t``, ``df``, ``p``, ``cohens_d``, ``ci_low``, ``ci_high``.

    Raises
    ------
    MerError
        If a system is missing or the two systems' (seed, number) keys differ.
    """
    per_excerpt = per_excerpt_mae(logs, which)
    rows = []
    for a, b in pairs:
        paired = _paired_values(per_excerpt, a, b)
        xa, xb = paired["mae_a"].to_numpy(np.float64), paired["mae_b"].to_numpy(np.float64)
        if len(xa) < 2:
            raise MerError(f"paired test {a} vs {b}: need at least 2 pairs, got {len(xa)}")
        test = sps.ttest_rel(xa, xb)
        lo, hi = bootstrap_ci(xa - xb, np.mean, n_boot=n_boot, seed=seed, level=level)
        rows.append({"a": a, "b": b, "n_pairs": len(xa), "mean_a": float(xa.mean()), "mean_b": float(xb.mean()),
                     "mean_diff": float(np.mean(xa - xb)), "t": float(test.statistic), "df": int(len(xa) - 1),
                     "p": float(test.pvalue), "cohens_d": cohens_d_paired(xa, xb), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the paper's findings
def _finding(finding: str, measure: str, value: float, holds) -> dict:
    return {"finding": finding, "measure": measure, "value": value,
            "holds": None if value is None or not np.isfinite(value) else bool(holds)}


def paper_findings(per_model: pd.DataFrame, tests: pd.DataFrame | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """The paper's qualitative findings, each measured on a set of runs and checked.

    Every finding is a number computed from the runs (``value``) and a rule
    that says whether the finding holds on them (``holds``). Applying the same
    function to the authors' published logs and to one's own runs gives a
    like-for-like comparison without copying any number from the paper.

    Parameters
    ----------
    per_model : pandas.DataFrame
        Output of :func:`per_model_metrics` (or tidy attack logs).
    tests : pandas.DataFrame, optional
        Output of :func:`paired_ttests`; its A2E/A2M2E and A2B2E/A2M2E rows add
        two findings.
    alpha : float
        Significance level for the t-test findings.

    Returns
    -------
    pandas.DataFrame
        Columns ``finding``, ``measure`` (how ``value`` is computed),
        ``value`` and ``holds`` (bool; None when a system needed for the
        finding is missing). Medians and means are over the models (seeds) of
        a system; "adv. trained" is the mean of the aA2E and aA2B2E medians,
        "plain black boxes" the mean of the A2E and A2B2E medians.
    """
    pm = _as_per_model(per_model, ["dmae", "clean_r"])
    med = pm.groupby("system")["dmae"].median()
    clean = pm.groupby("system")["clean_r"].mean()

    def m(s: str) -> float:
        return float(med.get(s, np.nan))

    def r(s: str) -> float:
        return float(clean.get(s, np.nan))

    rows = []
    for other in ("A2E", "A2B2E"):
        v = m(other) - m("A2M2E")
        rows.append(_finding(f"A2M2E is more robust than {other}", f"median dMAE {other} - A2M2E", v, v > 0))
    for plain in ("A2E", "A2B2E"):
        v = m(plain) - m("a" + plain)
        rows.append(_finding(f"adversarial training makes {plain} more robust",
                             f"median dMAE {plain} - a{plain}", v, v > 0))
    adv = np.mean([m("aA2E"), m("aA2B2E")])
    plain = np.mean([m("A2E"), m("A2B2E")])
    v = abs(m("A2M2E") - adv) - abs(m("A2M2E") - plain)
    rows.append(_finding("A2M2E's robustness is closer to the adversarially trained models' than to the plain ones'",
                         "|A2M2E - adv. trained| - |A2M2E - plain black boxes| (median dMAE)", float(v), v < 0))
    others = [s for s in clean.index if s != "A2E"]
    v = r("A2E") - (max(r(s) for s in others) if others else np.nan)
    rows.append(_finding("A2E has the best clean performance", "mean clean r: A2E - best other system", v, v > 0))
    v = r("A2E") - r("A2M2E")
    rows.append(_finding("the interpretable bottleneck costs clean performance", "mean clean r: A2E - A2M2E",
                         v, v > 0))
    v = r("A2E") - r("aA2E")
    rows.append(_finding("adversarial training costs clean performance", "mean clean r: A2E - aA2E", v, v > 0))
    if tests is not None:
        for rec in tests.to_dict("records"):
            if rec["b"] != "A2M2E" or rec["a"] not in ("A2E", "A2B2E"):
                continue
            rows.append(_finding(f"per-excerpt MAE after attack: {rec['a']} significantly above A2M2E",
                                 f"paired t-test mean diff {rec['a']} - A2M2E (holds if > 0 and p < {alpha:g})",
                                 float(rec["mean_diff"]), rec["mean_diff"] > 0 and rec["p"] < alpha))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- perturbations
def perturbation_stats(logs: pd.DataFrame, by: Sequence[str] = ("system",)) -> pd.DataFrame:
    """Size and cost of the adversarial perturbations per system.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs with ``iterations``, ``norm``, ``db_reference`` and
        ``converged``; an optional ``snr_db`` column (the project's true
        spectral SNR, protocol §6.2) is summarised when present.
    by : sequence of str
        Grouping columns (default per system; ``("system", "seed")`` gives one
        row per model).

    Returns
    -------
    pandas.DataFrame
        Per group: ``n_excerpts``, ``iterations_mean``, ``iterations_median``,
        ``norm_median``, ``norm_q25``, ``norm_q75``, ``norm_iqr`` (L2 norm of
        the perturbation), ``db_reference_median`` (the reference's pseudo-SNR,
        not a true SNR), ``converged_share`` and, if available, ``snr_db_median``.
    """
    by = list(by)
    _require(logs, [*by, "iterations", "norm", "db_reference", "converged"])
    has_snr = "snr_db" in logs.columns
    rows = []
    for key, g in logs.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        norm = g["norm"].to_numpy(np.float64)
        q25, med, q75 = np.quantile(norm, [0.25, 0.5, 0.75])
        row = dict(zip(by, key))
        row.update({"n_excerpts": len(g), "iterations_mean": float(g["iterations"].mean()),
                    "iterations_median": float(g["iterations"].median()), "norm_median": float(med),
                    "norm_q25": float(q25), "norm_q75": float(q75), "norm_iqr": float(q75 - q25),
                    "db_reference_median": float(g["db_reference"].median()),
                    "converged_share": float(g["converged"].astype(bool).mean())})
        if has_snr:
            row["snr_db_median"] = float(g["snr_db"].median())
        rows.append(row)
    out = pd.DataFrame(rows)
    return _sort_models(out) if "system" in by else out.sort_values(by, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- table output
def _cell(value, decimals: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if np.isnan(v):
            return "n/a"
        return f"{v:.{decimals}f}"
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _with_index(df: pd.DataFrame, index: bool) -> pd.DataFrame:
    return df.reset_index() if index else df


def table_to_markdown(df: pd.DataFrame, decimals: int = 3, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (no dependency on ``tabulate``).

    Parameters
    ----------
    df : pandas.DataFrame
    decimals : int
        Decimals of float cells; NaN is written as ``n/a``.
    index : bool
        Include the index as the first column(s).

    Returns
    -------
    str
        Header, alignment row (numbers right-aligned) and one line per row,
        ending with a newline. ``|`` inside cells is escaped.
    """
    df = _with_index(df, index)
    header = [str(c).replace("|", "\\|") for c in df.columns]
    body = [[_cell(v, decimals).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    align = ["---:" if _is_numeric(df[c]) else ":---" for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$")


def table_to_latex(df: pd.DataFrame, decimals: int = 3, index: bool = False, caption: str | None = None,
                   label: str | None = None) -> str:
    """A booktabs LaTeX ``tabular`` (wrapped in a ``table`` when a caption or label is given).

    Parameters
    ----------
    df : pandas.DataFrame
    decimals : int
        Decimals of float cells; NaN is written as ``n/a``.
    index : bool
        Include the index as the first column(s).
    caption, label : str, optional
        Caption text (escaped) and ``\\label`` key.

    Returns
    -------
    str
        LaTeX source needing ``\\usepackage{booktabs}``; special characters are
        escaped and ``±`` becomes ``$\\pm$``.
    """
    df = _with_index(df, index)
    spec = "".join("r" if _is_numeric(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(_cell(v, decimals)) for v in row) + r" \\"
              for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption is not None or label is not None:
        inner = [r"\begin{table}[t]", r"\centering"]
        if caption is not None:
            inner.append(rf"\caption{{{_latex_escape(caption)}}}")
        if label is not None:
            inner.append(rf"\label{{{label}}}")
        lines = inner + lines + [r"\end{table}"]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, stem: str | os.PathLike, decimals: int = 3, index: bool = False,
               caption: str | None = None, label: str | None = None) -> dict[str, Path]:
    """Write a table as ``<stem>.csv`` (full precision), ``<stem>.md`` and ``<stem>.tex``, atomically.

    Parameters
    ----------
    df : pandas.DataFrame
    stem : path-like
        Destination without suffix, e.g. ``runs/quick/tables/table1``; parent
        folders are created.
    decimals, index, caption, label
        Passed to :func:`table_to_markdown` / :func:`table_to_latex`.

    Returns
    -------
    dict
        ``{"csv": path, "md": path, "tex": path}``.
    """
    stem = Path(stem)
    paths = {ext: stem.with_name(stem.name + f".{ext}") for ext in ("csv", "md", "tex")}
    artifacts.write_text(paths["csv"], df.to_csv(index=index))
    artifacts.write_text(paths["md"], table_to_markdown(df, decimals=decimals, index=index))
    artifacts.write_text(paths["tex"], table_to_latex(df, decimals=decimals, index=index,
                                                      caption=caption, label=label))
    return paths
