"""Regression metrics against scipy and direct formulas."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr

from mer_lib.config import EMOTIONS
from mer_lib.errors import MerError
from mer_lib.metrics import cross_correlation, mae, pearson_per_column, r2, r2_per_column, regression_report, rmse


@pytest.fixture()
def pair():
    rng = np.random.default_rng(3)
    y = rng.random((36, 8))
    p = 0.6 * y + 0.4 * rng.random((36, 8))
    return y, p


def test_pearson_matches_scipy(pair):
    y, p = pair
    expected = [pearsonr(y[:, k], p[:, k])[0] for k in range(8)]
    np.testing.assert_allclose(pearson_per_column(y, p), expected, rtol=1e-12, atol=1e-12)


def test_pearson_is_across_excerpts_not_across_targets():
    y = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]])
    p = np.array([[0.2, 0.5], [0.4, 0.4], [0.6, 0.3]])
    np.testing.assert_allclose(pearson_per_column(y, p), [1.0, 1.0])


def test_constant_column_gives_nan(pair):
    y, p = pair
    p = p.copy()
    p[:, 2] = 0.5
    r = pearson_per_column(y, p)
    assert np.isnan(r[2]) and np.isfinite(np.delete(r, 2)).all()


def test_errors_match_direct_formulas(pair):
    y, p = pair
    assert mae(y, p) == pytest.approx(np.mean(np.abs(y - p)))
    np.testing.assert_allclose(mae(y, p, axis=1), np.abs(y - p).mean(axis=1))
    assert rmse(y, p) == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    per = [1 - np.sum((y[:, k] - p[:, k]) ** 2) / np.sum((y[:, k] - y[:, k].mean()) ** 2) for k in range(8)]
    np.testing.assert_allclose(r2_per_column(y, p), per)
    assert r2(y, p) == pytest.approx(np.mean(per))
    assert r2(y, y) == 1.0 and mae(y, y) == 0.0


def test_regression_report(pair):
    y, p = pair
    rep = regression_report(y, p.astype(np.float32), EMOTIONS)
    assert set(rep) == {"n", "mean_r", "r", "mae", "rmse", "r2", "r2_per_target"}
    assert list(rep["r"]) == list(EMOTIONS) and rep["n"] == 36
    assert rep["r"]["tension"] == pytest.approx(pearsonr(y[:, 2], p[:, 2])[0], abs=1e-6)
    assert rep["mean_r"] == pytest.approx(np.mean(list(rep["r"].values())))
    json.dumps(rep)  # plain JSON types only
    p2 = p.copy()
    p2[:, 0] = 0.3
    assert regression_report(y, p2, EMOTIONS)["r"]["valence"] is None


def test_shape_errors():
    with pytest.raises(MerError, match="same"):
        mae(np.zeros((3, 8)), np.zeros((3, 7)))
    with pytest.raises(MerError, match="names"):
        regression_report(np.zeros((3, 2)), np.zeros((3, 2)), ["a"])


def test_cross_correlation_matches_numpy_corrcoef(pair):
    y, p = pair
    r = cross_correlation(y[:, :3], p)
    expected = np.corrcoef(y[:, :3].T, p.T)[:3, 3:]
    np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-12)
    flat = p.copy()
    flat[:, 1] = 0.25
    assert np.isnan(cross_correlation(y, flat)[:, 1]).all()
    with pytest.raises(MerError, match="same N"):
        cross_correlation(y, p[:-1])
