"""The paper's analysis (protocol §7), computed from attack logs.

Every function takes a *tidy table of attack logs*: one row per attacked test excerpt, with ``system``, ``seed``,
``number`` and the columns of :func:`mer_lib.attacks.logs.read_attack_log`, as the published runs
(:func:`mer_lib.attacks.logs.read_published_runs`) and the project's own runs give it. A ``per_model`` argument
also accepts :func:`mer_lib.attacks.logs.per_model_metrics` output. Functions are pure; MAE is on the ratings/10
scale, SDs over seeds use ``ddof=1``, paired differences are "first minus second".

Uncertainty follows protocol §7: the model (seed) is the unit of every interval (NaN for a single model), and
``n_boot``, ``seed``, ``level`` are always the bootstrap's resamples, its seed and the confidence level.
:func:`paired_ttests` reproduce the paper's pooled test; no verdict of :func:`paper_findings` rests on it.
"""
from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from mer_lib.analysis.tables import format_mean_std
from mer_lib.attacks.logs import (
    MODEL_KEYS,
    abs_errors,
    as_per_model,
    check_prediction_kind,
    check_unique_excerpts,
    per_model_metrics,
    prediction_columns,
    require_columns,
    sort_models,
    system_order,
)
from mer_lib.errors import MerError

#: The comparisons of the paper's t-tests (protocol §7).
DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (("A2E", "A2M2E"), ("A2B2E", "A2M2E"))


# --------------------------------------------------------------------------- uncertainty helpers
#: The possible verdicts of a finding (see :func:`verdict`).
VERDICTS: tuple[str, str, str, str] = ("holds", "contradicted", "inconclusive", "undecided")


_UNIT_MODELS = "models (seeds)"


#: The statistics over models that tables and curves summarise with (:func:`interval_over_models`).
STATS: dict[str, Callable[..., np.ndarray]] = {"median": np.median, "mean": np.mean}


_NAN = float("nan")


def _check_bootstrap_args(n_boot: int, seed: int, level: float, where: str) -> int:
    """Validate the common bootstrap arguments; return ``n_boot`` as an int."""
    try:
        n = int(n_boot)
    except (TypeError, ValueError):
        raise MerError(f"{where}: n_boot must be a positive integer, got {n_boot!r}") from None
    if n < 1 or n != n_boot:
        raise MerError(f"{where}: n_boot must be a positive integer, got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MerError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(level, (int, float, np.floating)) or not (0.0 < float(level) < 1.0):
        raise MerError(f"{where}: level must be in (0, 1), got {level!r}")
    return n


def _ci_label(level: float) -> str:
    """``0.95`` -> ``"95% CI"``."""
    return f"{round(100.0 * float(level), 6):g}% CI"


def _format_estimate_ci(estimate: float, low: float, high: float, decimals: int) -> str:
    if not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{decimals}f} [n/a]"
    return f"{estimate:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


def _percentile_ci(boot: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates; NaN if any replicate is not finite."""
    boot = np.asarray(boot, dtype=np.float64)
    if boot.size == 0 or not np.isfinite(boot).all():
        return _NAN, _NAN
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student's t-interval of the mean of one sample; NaN for < 2 values or a NaN, zero width if all are equal."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2 or np.isnan(x).any():
        return _NAN, _NAN
    half = float(sps.t.ppf(0.5 + float(level) / 2.0, x.size - 1) * np.std(x, ddof=1) / math.sqrt(x.size))
    return float(x.mean() - half), float(x.mean() + half)


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Welch's interval of ``mean(a) - mean(b)`` and its two-sided p-value, as ``(low, high, p)``.

    All NaN if a sample has < 2 values or a NaN; with both variances zero, the point and p 0 (1 for equal means).
    """
    x, y = (np.asarray(v, dtype=np.float64).ravel() for v in (a, b))
    if x.size < 2 or y.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return _NAN, _NAN, _NAN
    vx, vy = np.var(x, ddof=1) / x.size, np.var(y, ddof=1) / y.size
    diff, se = float(x.mean() - y.mean()), float(math.sqrt(vx + vy))
    if se == 0.0:
        return diff, diff, float(diff == 0.0)
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    half = float(sps.t.ppf(0.5 + float(level) / 2.0, df)) * se
    return diff - half, diff + half, float(2.0 * sps.t.sf(abs(diff) / se, df))


def sd_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of the standard deviation of a normal sample (NaN for < 2 values)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2 or np.isnan(x).any():
        return _NAN, _NAN
    sd, dof, alpha = float(np.std(x, ddof=1)), x.size - 1, 1.0 - float(level)
    return (sd * math.sqrt(dof / sps.chi2.ppf(1.0 - alpha / 2.0, dof)),
            sd * math.sqrt(dof / sps.chi2.ppf(alpha / 2.0, dof)))


def stat_function(stat: str, where: str) -> Callable[..., np.ndarray]:
    """The function of :data:`STATS` called ``stat``; :class:`MerError` naming ``where`` for another name."""
    if stat not in STATS:
        raise MerError(f"{where}: stat must be one of {sorted(STATS)}, got {stat!r}")
    return STATS[stat]


def interval_over_models(values: np.ndarray, stat: str = "mean", n_boot: int = 10_000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Interval over one system's models: :func:`t_interval` (mean) or :func:`bootstrap_ci` (median); NaN for < 2."""
    func = stat_function(stat, "interval_over_models")
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 2 or np.isnan(x).any():
        return _NAN, _NAN
    if stat == "mean":
        return t_interval(x, level)
    return bootstrap_ci(x, func, n_boot=n_boot, seed=seed, level=level)


def verdict(ci_low: float, ci_high: float, direction: int = 1, estimate: float | None = None) -> str:
    """Whether the interval ``[ci_low, ci_high]`` confirms the sign ``direction`` (+1 or -1) predicted for a statistic.

    Returns
    -------
    str
        ``"holds"``: strictly on the predicted side of 0; ``"contradicted"``: strictly on the other side;
        ``"inconclusive"``: touches or contains 0; ``"undecided"``: a bound or the given ``estimate`` is NaN.

    Raises
    ------
    MerError
        If ``direction`` is not +1 or -1.
    """
    if direction not in (1, -1):
        raise MerError(f"verdict: direction must be +1 or -1 (the predicted sign), got {direction!r}")
    values = [ci_low, ci_high] + ([] if estimate is None else [estimate])
    if any(v is None or not np.isfinite(float(v)) for v in values):
        return "undecided"
    lo, hi = float(ci_low) * direction, float(ci_high) * direction
    lo, hi = min(lo, hi), max(lo, hi)
    if lo > 0:
        return "holds"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def _holds_flag(word: str) -> bool | None:
    """The boolean ``holds`` column: None when undecided."""
    return None if word == "undecided" else word == "holds"


class _SystemBootstrap:
    """Per system: a statistic over its models (sorted by seed) and its bootstrap replicates (NaN for < 2 models).

    Seeded per system by ``(seed, crc32(system), crc32(quantity))``, so draws do not depend on the other systems.
    """

    def __init__(self, pm: pd.DataFrame, quantity: str, stat: str, n_boot: int, seed: int) -> None:
        func = STATS[stat]
        self.n_boot = n_boot
        self.n: dict[str, int] = {}
        self.point: dict[str, float] = {}
        self.boot: dict[str, np.ndarray] = {}
        ordered = sort_models(pm[[*MODEL_KEYS, quantity]])
        for system in system_order(ordered["system"]):
            values = ordered.loc[ordered["system"] == system, quantity].to_numpy(np.float64)
            values = values[~np.isnan(values)]
            self.n[system] = int(values.size)
            self.point[system] = float(func(values)) if values.size else _NAN
            if values.size < 2:
                self.boot[system] = np.full(n_boot, _NAN)
                continue
            rng = np.random.default_rng([int(seed), zlib.crc32(str(system).encode("utf-8")),
                                         zlib.crc32(quantity.encode("utf-8"))])
            idx = rng.integers(0, values.size, size=(n_boot, values.size))
            self.boot[system] = np.asarray(func(values[idx], axis=1), dtype=np.float64)

    def point_of(self, system: str) -> float:
        return self.point.get(system, _NAN)

    def boot_of(self, system: str) -> np.ndarray:
        return self.boot.get(system, np.full(self.n_boot, _NAN))


def table1(logs: pd.DataFrame, decimals: int = 3, n_boot: int = 10_000, seed: int = 0,
           level: float = 0.95) -> pd.DataFrame:
    """Table 1 of the paper: clean performance per system over its models.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs or :func:`per_model_metrics` output (``clean_r``/``clean_mae``, no ``number``).
    n_boot, seed
        Checked but unused: the intervals are t-intervals.

    Returns
    -------
    pandas.DataFrame
        Per system (paper order): ``system``, ``n_seeds``, ``r_mean``, ``r_std``, ``r_ci_low``, ``r_ci_high``,
        ``mae_mean``, ``mae_std``, ``mae_ci_low``, ``mae_ci_high`` (NaN for one seed), and the formatted
        ``r (mean ± std)``, ``MAE (mean ± std)``, ``r (mean, 95% CI)``, ``MAE (mean, 95% CI)`` (% from ``level``)
        written like ``0.706 [0.690, 0.722]``.

    Raises
    ------
    MerError
        On malformed input or invalid bootstrap arguments.
    """
    n_boot = _check_bootstrap_args(n_boot, seed, level, "table1")
    pm = as_per_model(logs, ["clean_r", "clean_mae"])
    ci = _ci_label(level)
    rows = []
    for system in system_order(pm["system"]):
        g = pm[pm["system"] == system]
        r, m = g["clean_r"].to_numpy(np.float64), g["clean_mae"].to_numpy(np.float64)
        r_mean, m_mean = float(np.mean(r)), float(np.mean(m))
        r_std = float(np.std(r, ddof=1)) if len(r) > 1 else _NAN
        m_std = float(np.std(m, ddof=1)) if len(m) > 1 else _NAN
        r_lo, r_hi = interval_over_models(r, "mean", n_boot, seed, level)
        m_lo, m_hi = interval_over_models(m, "mean", n_boot, seed, level)
        rows.append({"system": system, "n_seeds": int(g["seed"].nunique()),
                     "r_mean": r_mean, "r_std": r_std, "r_ci_low": r_lo, "r_ci_high": r_hi,
                     "mae_mean": m_mean, "mae_std": m_std, "mae_ci_low": m_lo, "mae_ci_high": m_hi,
                     "r (mean ± std)": format_mean_std(r_mean, r_std, decimals),
                     "MAE (mean ± std)": format_mean_std(m_mean, m_std, decimals),
                     f"r (mean, {ci})": _format_estimate_ci(r_mean, r_lo, r_hi, decimals),
                     f"MAE (mean, {ci})": _format_estimate_ci(m_mean, m_lo, m_hi, decimals)})
    return pd.DataFrame(rows)


def dmae_summary(logs: pd.DataFrame, n_boot: int = 10_000, seed: int = 0, level: float = 0.95,
                 quantity: str = "dmae") -> pd.DataFrame:
    """Distribution of ``quantity`` (``"dmae"``, ``"dmae_rel"``) over each system's models: the numbers of Figure 3.

    Returns
    -------
    pandas.DataFrame
        Per system (paper order): ``n_models``, ``median``, ``q25``, ``q75``, ``mean``, ``std``, ``min``, ``max``,
        ``clean_mae_median``, ``adv_mae_median``, ``mean_ci_low``, ``mean_ci_high``, ``median_ci_low``,
        ``median_ci_high`` (:func:`interval_over_models`).

    Raises
    ------
    MerError
        On malformed input or invalid bootstrap arguments.
    """
    n_boot = _check_bootstrap_args(n_boot, seed, level, "dmae_summary")
    pm = as_per_model(logs, [quantity, "clean_mae", "adv_mae"])
    require_columns(pm, [quantity], "dmae_summary")
    rows = []
    for system in system_order(pm["system"]):
        g = pm[pm["system"] == system]
        d = g[quantity].to_numpy(np.float64)
        q25, med, q75 = np.quantile(d, [0.25, 0.5, 0.75])
        mean_lo, mean_hi = interval_over_models(d, "mean", n_boot, seed, level)
        med_lo, med_hi = interval_over_models(d, "median", n_boot, seed, level)
        rows.append({"system": system, "n_models": len(d), "median": float(med), "q25": float(q25),
                     "q75": float(q75), "mean": float(d.mean()),
                     "std": float(np.std(d, ddof=1)) if len(d) > 1 else _NAN,
                     "min": float(d.min()), "max": float(d.max()),
                     "clean_mae_median": float(g["clean_mae"].median()),
                     "adv_mae_median": float(g["adv_mae"].median()),
                     "mean_ci_low": mean_lo, "mean_ci_high": mean_hi,
                     "median_ci_low": med_lo, "median_ci_high": med_hi})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- per excerpt, tests
def per_excerpt_mae(logs: pd.DataFrame, which: str = "new") -> pd.DataFrame:
    """MAE over the 8 emotions of every excerpt, after the attack (``which="new"``) or clean (``"orig"``).

    Returns
    -------
    pandas.DataFrame
        ``system``, ``seed``, ``number``, ``mae``, sorted by system (paper order), seed and number.
    """
    check_prediction_kind(which)
    require_columns(logs, prediction_columns(which))
    check_unique_excerpts(logs)
    out = logs[[*MODEL_KEYS, "number"]].copy()
    out["mae"] = abs_errors(logs, which).mean(axis=1)
    return sort_models(out)


def bootstrap_ci(values: np.ndarray, stat: Callable[..., float] = np.mean, n_boot: int = 10_000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic of one sample.

    Parameters
    ----------
    values : array_like, shape (n,)
        The sample; for paired data the per-pair differences, so that pairs are resampled together.
    stat : callable
        Statistic of a 1-d sample; evaluated on all resamples at once if it accepts ``axis=``.

    Returns
    -------
    (float, float)
        The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles; same inputs and ``seed``, same interval.

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
    n_boot, n = _check_bootstrap_args(n_boot, seed, level, "bootstrap_ci"), x.size
    rng = np.random.default_rng(seed)
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
    return _percentile_ci(boot, level)


def cohens_d_paired(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d for paired samples (d_z): mean(a - b) / SD(a - b), ddof=1; NaN if all differences are equal.

    Raises ``MerError`` for fewer than 2 pairs.
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
    """The paper's paired t-tests of per-excerpt MAE, pooled over seeds (protocol §7).

    Per pair ``(a, b)``: :func:`per_excerpt_mae` paired on (seed, excerpt), a two-sided :func:`scipy.stats.ttest_rel`,
    Cohen's d and a bootstrap CI over pairs, all ignoring that the same excerpts recur for every seed.

    Parameters
    ----------
    which : {"new", "orig"}
        MAE after the attack (the paper's test) or clean.

    Returns
    -------
    pandas.DataFrame
        Per pair: ``a``, ``b``, ``n_pairs``, ``mean_a``, ``mean_b``, ``mean_diff``, ``t``, ``df``, ``p``,
        ``cohens_d``, ``ci_low``, ``ci_high``.

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


# --------------------------------------------------------------------------- contrasts between systems
def system_contrasts(per_model: pd.DataFrame, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                     quantity: str = "dmae", stat: str = "median", n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """Differences ``stat(a's models) - stat(b's models)`` of a per-model ``quantity``, with CIs over models.

    Medians: percentile bootstrap resampling the models of ``a`` and ``b`` independently; means: :func:`welch_interval`.

    Returns
    -------
    pandas.DataFrame
        Per pair: ``a``, ``b``, ``quantity``, ``stat``, ``n_a``, ``n_b`` (models with a value), ``estimate``,
        ``ci_low``, ``ci_high``, ``verdict`` (predicted sign ``a - b > 0``; ``"undecided"`` for a missing system
        or a single model).

    Raises
    ------
    MerError
        On an unknown ``stat``, a missing ``quantity`` column, malformed pairs or invalid bootstrap arguments.
    """
    n_boot = _check_bootstrap_args(n_boot, seed, level, "system_contrasts")
    stat_function(stat, "system_contrasts")
    if not isinstance(quantity, str):
        raise MerError(f"system_contrasts: quantity must be a column name, got {quantity!r}")
    pairs = list(pairs)
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise MerError(f"system_contrasts: each pair must be (system_a, system_b), got {pair!r}")
    is_logs = isinstance(per_model, pd.DataFrame) and "number" in per_model.columns
    pm = per_model_metrics(per_model) if is_logs else per_model
    if not isinstance(pm, pd.DataFrame) or quantity not in pm.columns:
        found = list(pm.columns) if isinstance(pm, pd.DataFrame) else type(pm).__name__
        raise MerError(f"system_contrasts: no column {quantity!r} in the per-model table; found {found}")
    pm = as_per_model(pm, [quantity])
    boot = _SystemBootstrap(pm, quantity, stat, n_boot, seed)
    rows = []
    for a, b in pairs:
        estimate = boot.point_of(a) - boot.point_of(b)
        if not np.isfinite(estimate):
            lo, hi = _NAN, _NAN
        elif stat == "mean":
            lo, hi, _ = welch_interval(_values(pm, a, quantity), _values(pm, b, quantity), level)
        else:
            lo, hi = _percentile_ci(boot.boot_of(a) - boot.boot_of(b), level)
        rows.append({"a": a, "b": b, "quantity": quantity, "stat": stat, "n_a": boot.n.get(a, 0),
                     "n_b": boot.n.get(b, 0), "estimate": float(estimate), "ci_low": lo, "ci_high": hi,
                     "verdict": verdict(lo, hi, 1, estimate)})
    return pd.DataFrame(rows, columns=["a", "b", "quantity", "stat", "n_a", "n_b", "estimate", "ci_low",
                                       "ci_high", "verdict"])


# --------------------------------------------------------------------------- the paper's findings
_FINDING_COLUMNS = ["finding", "measure", "quantity", "unit", "estimate", "ci_low", "ci_high", "verdict", "holds",
                    "p", "level"]

#: Per-model robustness measures the findings can be computed in, with the label used in ``measure``.
ROBUSTNESS_MEASURES: dict[str, str] = {
    "dmae": "median dMAE",
    "dmae_rel": "median dMAE / clean spread",
    "adv_mae": "mean MAE after attack",
}


def _finding_row(finding: str, measure: str, quantity: str, estimate: float, low: float, high: float,
                 direction: int, p: float, level: float) -> dict:
    estimate = float(estimate) if estimate is not None else _NAN
    word = verdict(low, high, direction, estimate)
    return {"finding": finding, "measure": measure, "quantity": quantity, "unit": _UNIT_MODELS,
            "estimate": estimate, "ci_low": float(low), "ci_high": float(high), "verdict": word,
            "holds": _holds_flag(word), "p": float(p), "level": float(level)}


def _median_findings(label: str) -> list[tuple[str, str, int, Callable]]:
    """Median robustness findings: (finding, measure, direction, statistic of ``get(system)``, point or replicates)."""
    out: list[tuple[str, str, int, Callable]] = []
    for other in ("A2E", "A2B2E"):
        out.append((f"A2M2E is more robust than {other}", f"{label}: {other} - A2M2E", 1,
                    lambda get, o=other: get(o) - get("A2M2E")))
    for plain in ("A2E", "A2B2E"):
        out.append((f"adversarial training makes {plain} more robust", f"{label}: {plain} - a{plain}", 1,
                    lambda get, q=plain: get(q) - get("a" + q)))

    def closeness(get: Callable) -> np.ndarray:
        adv = (get("aA2E") + get("aA2B2E")) / 2.0
        plain_boxes = (get("A2E") + get("A2B2E")) / 2.0
        return np.abs(get("A2M2E") - adv) - np.abs(get("A2M2E") - plain_boxes)

    out.append(("A2M2E's robustness is closer to the adversarially trained models' than to the plain ones'",
                f"{label}: |A2M2E - adv. trained| - |A2M2E - plain black boxes|", -1, closeness))
    return out


def _values(pm: pd.DataFrame, system: str, quantity: str) -> np.ndarray:
    return pm.loc[pm["system"] == system, quantity].dropna().to_numpy(np.float64)


def _mean_finding(pm: pd.DataFrame, finding: str, measure: str, quantity: str, a: str, b: str,
                  level: float) -> dict:
    """A finding on ``mean(a) - mean(b)`` > 0 over models, with Welch's interval and p."""
    va, vb = _values(pm, a, quantity), _values(pm, b, quantity)
    estimate = float(va.mean() - vb.mean()) if va.size and vb.size else _NAN
    lo, hi, p = welch_interval(va, vb, level)
    return _finding_row(finding, measure, quantity, estimate, lo, hi, 1, p, level)


def _best_finding(pm: pd.DataFrame, level: float) -> dict:
    """"A2E has the best clean performance": A2E minus the best other mean clean r, Bonferroni bounds (protocol §7)."""
    others = [s for s in system_order(pm["system"]) if s != "A2E"]
    finding, measure = "A2E has the best clean performance", "mean clean r: A2E - best other system"
    va = _values(pm, "A2E", "clean_r")
    if not others or va.size == 0:
        return _finding_row(finding, measure, "clean_r", _NAN, _NAN, _NAN, 1, _NAN, level)
    means = {s: _values(pm, s, "clean_r").mean() for s in others}
    estimate = float(va.mean() - max(means.values()))
    adjusted = 1.0 - (1.0 - float(level)) / len(others)
    bounds = [welch_interval(va, _values(pm, s, "clean_r"), adjusted) for s in others]
    lo, hi = min(b[0] for b in bounds), min(b[1] for b in bounds)
    return _finding_row(finding, measure, "clean_r", estimate, lo, hi, 1, _NAN, level)


def seeds_for_power(per_model: pd.DataFrame, pairs: Sequence[tuple[str, str]] = DEFAULT_PAIRS,
                    quantity: str = "dmae", power: float = 0.8, level: float = 0.95) -> pd.DataFrame:
    """Seeds per system for a contrast's CI to exclude zero with probability ``power``, from the measured seed spread.

    Normal approximation for two system means with equal numbers of models:
    ``n = 2 (z_(1+level)/2 + z_power)^2 * s^2 / d^2``, ``d`` the observed difference, ``s^2`` the mean of the two
    variances (ddof=1). A planning figure only: it takes ``d`` as the true difference.

    Returns
    -------
    pandas.DataFrame
        Per pair: ``a``, ``b``, ``quantity``, ``n_a``, ``n_b``, ``difference`` (mean a - mean b), ``sd_a``,
        ``sd_b``, ``seeds_needed`` (NaN for < 2 models or a zero difference).

    Raises
    ------
    MerError
        If ``power`` or ``level`` is outside (0, 1).
    """
    if not (0.0 < power < 1.0) or not (0.0 < level < 1.0):
        raise MerError(f"seeds_for_power: power and level must be in (0, 1), got {power}, {level}")
    pm = as_per_model(per_model, [quantity])
    z = float(sps.norm.ppf(0.5 + level / 2.0) + sps.norm.ppf(power))
    rows = []
    for a, b in pairs:
        va = pm.loc[pm["system"] == a, quantity].dropna().to_numpy(np.float64)
        vb = pm.loc[pm["system"] == b, quantity].dropna().to_numpy(np.float64)
        row = {"a": a, "b": b, "quantity": quantity, "n_a": len(va), "n_b": len(vb),
               "difference": np.nan, "sd_a": np.nan, "sd_b": np.nan, "seeds_needed": np.nan}
        if len(va) >= 2 and len(vb) >= 2:
            diff = float(va.mean() - vb.mean())
            sd_a, sd_b = float(np.std(va, ddof=1)), float(np.std(vb, ddof=1))
            row.update(difference=diff, sd_a=sd_a, sd_b=sd_b)
            if diff != 0.0:
                row["seeds_needed"] = float(math.ceil(2.0 * z ** 2 * (sd_a ** 2 + sd_b ** 2) / 2.0 / diff ** 2))
        rows.append(row)
    return pd.DataFrame(rows)


def paper_findings(per_model: pd.DataFrame, measures: Sequence[str] = ("dmae",), n_boot: int = 10_000,
                   seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """The paper's qualitative findings, each an estimate over models with its CI and verdict (protocol §7).

    The same call on the published logs and on one's own runs compares them without copying the paper's numbers.
    Robustness findings (one set per entry of ``measures``, keys of :data:`ROBUSTNESS_MEASURES`) compare medians
    with one joint bootstrap; clean-performance and "MAE after attack" findings compare means with Welch intervals.

    Returns
    -------
    pandas.DataFrame
        Per finding: ``finding``, ``measure`` ("adv. trained": mean of the aA2E and aA2B2E medians, "plain black
        boxes": of A2E and A2B2E), ``quantity``, ``unit``, ``estimate``, ``ci_low``, ``ci_high``, ``verdict``
        (predicted sign positive except for the closeness finding), ``holds`` (None when undecided), ``p`` (Welch's,
        mean findings only) and ``level``.

    Raises
    ------
    MerError
        On malformed input, an unknown measure or invalid bootstrap arguments.
    """
    n_boot = _check_bootstrap_args(n_boot, seed, level, "paper_findings")
    if isinstance(measures, str):
        measures = (measures,)
    unknown = [m for m in measures if m not in ROBUSTNESS_MEASURES]
    if unknown or not measures:
        raise MerError(f"paper_findings: measures must be some of {list(ROBUSTNESS_MEASURES)}, got {list(measures)}")
    pm = as_per_model(per_model, ["dmae", "clean_r", "adv_mae", *measures])
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN arithmetic for missing systems
        for quantity in measures:
            sb = _SystemBootstrap(pm, quantity, "median", n_boot, seed)
            for finding, measure, direction, statistic in _median_findings(ROBUSTNESS_MEASURES[quantity]):
                estimate = float(statistic(sb.point_of))
                replicates = np.broadcast_to(np.asarray(statistic(sb.boot_of), dtype=np.float64), (n_boot,))
                lo, hi = _percentile_ci(replicates, level) if np.isfinite(estimate) else (_NAN, _NAN)
                rows.append(_finding_row(finding, measure, quantity, estimate, lo, hi, direction, _NAN, level))
    rows.append(_best_finding(pm, level))
    rows.append(_mean_finding(pm, "the interpretable bottleneck costs clean performance",
                              "mean clean r: A2E - A2M2E", "clean_r", "A2E", "A2M2E", level))
    rows.append(_mean_finding(pm, "adversarial training costs clean performance",
                              "mean clean r: A2E - aA2E", "clean_r", "A2E", "aA2E", level))
    for other in ("A2E", "A2B2E"):
        rows.append(_mean_finding(pm, f"MAE after attack: {other} above A2M2E",
                                  f"mean MAE after attack: {other} - A2M2E", "adv_mae", other, "A2M2E", level))
    return pd.DataFrame(rows, columns=_FINDING_COLUMNS)


# --------------------------------------------------------------------------- comparisons
def compare_findings(a: pd.DataFrame, b: pd.DataFrame,
                     labels: tuple[str, str] = ("default kernels", "avx2-capped")) -> pd.DataFrame:
    """Two :func:`paper_findings` tables (e.g. two independent draws of the runs) side by side.

    Returns
    -------
    pandas.DataFrame
        Per ``measure`` (``a``'s order first): ``finding``, ``measure``, then per label ``estimate (<label>)``,
        ``ci_low (<label>)``, ``ci_high (<label>)``, ``verdict (<label>)``, and ``agree`` (equal verdicts).

    Raises
    ------
    MerError
        If a needed column is missing, a measure repeats, or the labels are not two distinct strings.
    """
    if isinstance(labels, str) or len(labels) != 2 or labels[0] == labels[1]:
        raise MerError(f"compare_findings: labels must be two distinct names, got {labels!r}")
    keep = ["finding", "measure", "estimate", "ci_low", "ci_high", "verdict"]
    parts = []
    for df, name in zip((a, b), labels):
        require_columns(df, keep, f"compare_findings ({name})")
        if df["measure"].duplicated().any():
            raise MerError(f"compare_findings ({name}): a measure appears more than once")
        parts.append(df[keep].rename(columns={c: f"{c} ({name})" for c in keep[2:]}))
    merged = parts[0].merge(parts[1], on="measure", how="outer", suffixes=("", " (b)"))
    merged["finding"] = merged["finding"].fillna(merged["finding (b)"])
    first = list(a["measure"])
    seen = set(first)
    rank = {m: i for i, m in enumerate(first + [m for m in b["measure"] if m not in seen])}
    merged = merged.assign(_rank=merged["measure"].map(rank)).sort_values("_rank", kind="stable")
    va, vb = merged[f"verdict ({labels[0]})"], merged[f"verdict ({labels[1]})"]
    merged["agree"] = (va == vb) & va.notna() & vb.notna()
    order = ["finding", "measure"] + [f"{c} ({name})" for name in labels for c in keep[2:]] + ["agree"]
    return merged[order].reset_index(drop=True)


# --------------------------------------------------------------------------- perturbations
def perturbation_stats(logs: pd.DataFrame, by: Sequence[str] = ("system",)) -> pd.DataFrame:
    """Size and cost of the adversarial perturbations per group of ``by`` (``("system", "seed")``: per model).

    Returns
    -------
    pandas.DataFrame
        ``n_excerpts``, ``iterations_mean``, ``iterations_median``, ``norm_median``, ``norm_q25``, ``norm_q75``,
        ``norm_iqr`` (L2 norm), ``db_reference_median`` (the reference's pseudo-SNR, not an SNR),
        ``converged_share`` and, if ``logs`` has ``snr_db`` (true SNR, protocol §6.2), ``snr_db_median``.
    """
    by = list(by)
    require_columns(logs, [*by, "iterations", "norm", "db_reference", "converged"])
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
    return sort_models(out) if "system" in by else out.sort_values(by, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- controls of the head's finishing
def findings_across(per_model: pd.DataFrame, by: str, measures: Sequence[str] = ("dmae", "dmae_rel"),
                    n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """:func:`paper_findings` per value of ``by`` (e.g. the ridge of a post-hoc head refit), stacked, ``by`` first."""
    require_columns(per_model, [by, *MODEL_KEYS], "findings_across")
    parts = [paper_findings(g.drop(columns=[by]), measures, n_boot, seed, level).assign(**{by: value})
             for value, g in per_model.groupby(by, sort=True)]
    out = pd.concat(parts, ignore_index=True)
    return out[[by, *[c for c in out.columns if c != by]]]


def verdicts_across(findings: pd.DataFrame, by: str, decimals: int = 2) -> pd.DataFrame:
    """Per finding and measure: estimate, CI and verdict at every value of ``by``, and across them.

    ``across``: the common verdict, else ``"depends on <by>"``; ``sign of the estimate``: ``"positive"``,
    ``"negative"`` or ``"changes with <by>"``.
    """
    require_columns(findings, [by, "finding", "measure", "estimate", "ci_low", "ci_high", "verdict"], "verdicts_across")
    cells = findings.assign(cell=[_format_estimate_ci(e, lo, hi, decimals) + f" {v}" for e, lo, hi, v in
                                  zip(findings["estimate"], findings["ci_low"], findings["ci_high"], findings["verdict"])])
    wide = cells.pivot_table(index=["finding", "measure"], columns=by, values="cell", aggfunc="first", sort=False)
    wide.columns = [f"{by} {value:g}" if isinstance(value, (int, float)) else f"{by} {value}" for value in wide.columns]
    groups = findings.groupby(["finding", "measure"], sort=False)
    words = groups["verdict"].agg(lambda v: v.iloc[0] if v.nunique() == 1 else f"depends on {by}")
    signs = groups["estimate"].agg(lambda e: "positive" if (e > 0).all() else "negative" if (e < 0).all()
                                   else f"changes with {by}")
    return wide.join(words.rename("across")).join(signs.rename("sign of the estimate")).reset_index()


def paired_differences(table: pd.DataFrame, column: str, a: str, b: str, quantities: Sequence[str],
                       on: str = "seed", level: float = 0.95) -> pd.DataFrame:
    """Differences ``quantity(a) - quantity(b)`` between the arms ``table[column] == a`` / ``b``, paired on ``on``.

    Per quantity: the mean difference, its t-interval over the pairs and :func:`verdict` (predicted sign positive).
    """
    require_columns(table, [column, on, *quantities], "paired_differences")
    left = table[table[column] == a].set_index(on)
    right = table[table[column] == b].set_index(on)
    both = left.index.intersection(right.index)
    if left.index.duplicated().any() or right.index.duplicated().any():
        raise MerError(f"paired_differences: {on!r} repeats within an arm of {column!r}")
    rows = []
    for quantity in quantities:
        diff = (left.loc[both, quantity] - right.loc[both, quantity]).to_numpy(np.float64)
        estimate = float(diff.mean()) if diff.size else _NAN
        lo, hi = t_interval(diff, level)
        rows.append({"quantity": quantity, "contrast": f"{a} - {b}", "n_pairs": int(diff.size), "estimate": estimate,
                     "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, 1, estimate)})
    return pd.DataFrame(rows)
