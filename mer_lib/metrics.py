"""Regression metrics of the study (protocol §7).

Every function takes targets ``y`` and predictions ``p`` of shape ``(N, K)`` (N excerpts; K emotions or mid-level
features), computes in float64 and returns numpy arrays or Python floats. An r or R2 of a constant column is ``nan``;
mismatched shapes or no example raise :class:`~mer_lib.errors.MerError`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mer_lib.errors import MerError


def _pair(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if y.shape != p.shape or y.ndim != 2:
        raise MerError(f"targets and predictions must have the same (N, K) shape, got {y.shape} and {p.shape}")
    if y.shape[0] == 0:
        raise MerError("metrics need at least one example")
    return y, p


def pearson_per_column(y, p) -> np.ndarray:
    """Pearson r of every column of ``y`` with the same column of ``p``, across the excerpts.

    Returns shape (K,), ``nan`` where either column is constant (the paper's "average r" is their mean).
    """
    y, p = _pair(y, p)
    dy = y - y.mean(axis=0)
    dp = p - p.mean(axis=0)
    num = (dy * dp).sum(axis=0)
    den = np.sqrt((dy * dy).sum(axis=0) * (dp * dp).sum(axis=0))
    defined = ~(_constant(y) | _constant(p)) & (den > 0)
    r = np.full(y.shape[1], np.nan)
    r[defined] = num[defined] / den[defined]
    return np.clip(r, -1.0, 1.0)


def cross_correlation(a, b) -> np.ndarray:
    """Pearson r of every column of ``a`` (N, Ka) with every column of ``b`` (N, Kb), e.g. emotions x mid-level.

    Returns shape (Ka, Kb): ``r[i, j]`` = r(a[:, i], b[:, j]), ``nan`` where either column is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise MerError(f"cross_correlation needs two (N, K) arrays with the same N, got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise MerError("cross_correlation needs at least two examples")
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    den = np.sqrt(np.outer((da * da).sum(axis=0), (db * db).sum(axis=0)))
    defined = np.outer(~_constant(a), ~_constant(b)) & (den > 0)
    r = np.full(den.shape, np.nan)
    r[defined] = (da.T @ db)[defined] / den[defined]
    return np.clip(r, -1.0, 1.0)


def _constant(a: np.ndarray) -> np.ndarray:
    """Columns whose values are all equal (exactly, as scipy's ``pearsonr`` checks)."""
    return np.all(a == a[:1], axis=0)


def mae(y, p, axis: int | None = None) -> float | np.ndarray:
    """Mean absolute error over all values (``axis=None``, a float), per example (``axis=1``) or per target (``0``)."""
    y, p = _pair(y, p)
    out = np.abs(y - p).mean(axis=axis)
    return float(out) if axis is None else out


def rmse(y, p) -> float:
    """Root mean squared error over all values."""
    y, p = _pair(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def r2_per_column(y, p) -> np.ndarray:
    """``1 - SS_res / SS_tot`` per column; ``nan`` where the target column is constant."""
    y, p = _pair(y, p)
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    defined = ~_constant(y) & (ss_tot > 0)
    out = np.full(y.shape[1], np.nan)
    out[defined] = 1.0 - ss_res[defined] / ss_tot[defined]
    return out


def r2(y, p) -> float:
    """Coefficient of determination, averaged uniformly over the columns (scikit-learn's ``r2_score`` default)."""
    return float(np.mean(r2_per_column(y, p)))


def regression_report(y, p, names: Sequence[str]) -> dict:
    """Every metric of one set of predictions, JSON-ready; ``names`` are the K target names (e.g. ``EMOTIONS``).

    Returns
    -------
    dict
        ``n``, ``mean_r``, ``r`` (name -> r), ``mae``, ``rmse``, ``r2``, ``r2_per_target`` (name -> R2); undefined
        values are ``None`` (JSON null).
    """
    y, p = _pair(y, p)
    names = list(names)
    if len(names) != y.shape[1]:
        raise MerError(f"{len(names)} names given for {y.shape[1]} columns")

    def num(v: float) -> float | None:
        return None if not np.isfinite(v) else float(v)

    r = pearson_per_column(y, p)
    r2s = r2_per_column(y, p)
    return {
        "n": int(y.shape[0]),
        "mean_r": num(float(np.mean(r))),
        "r": {k: num(v) for k, v in zip(names, r)},
        "mae": num(mae(y, p)),
        "rmse": num(rmse(y, p)),
        "r2": num(float(np.mean(r2s))),
        "r2_per_target": {k: num(v) for k, v in zip(names, r2s)},
    }
