"""Tests of mer_lib.data.synth.model: the controls and labels of the synthetic dataset.

Checks the label statistics against the real data (protocol §2.2) and the
validation of the generator's parameters.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.data.synth import model as synth_model
from mer_lib.errors import MerError


def test_sample_controls() -> None:
    c = synth_model.sample_controls(400, 3)
    assert list(c.columns) == list(synth_model.CONTROLS) and c.index.name == "number"
    assert list(c.index) == list(range(1, 401))
    assert c.to_numpy().min() > 0 and c.to_numpy().max() < 1
    pd.testing.assert_frame_equal(synth_model.sample_controls(10, 3), c.iloc[:10])
    r = c.corr()
    assert r.loc["melodiousness", "dissonance"] < -0.5 and r.loc["melodiousness", "tonal_stability"] > 0.5
    expected = synth_model.control_correlation()
    assert np.abs(r.to_numpy() - expected.to_numpy()).max() < 0.2


def test_label_statistics_match_real_data() -> None:
    controls = synth_model.sample_controls(4000, 5)
    mid, emo = synth_model.make_annotations(controls, 5)
    assert mid.to_numpy().min() >= 1 and mid.to_numpy().max() <= 10
    for e in ("valence", "energy", "tension"):
        assert 3.9 <= emo[e].mean() <= 4.4 and 1.4 <= emo[e].std() <= 1.8, e
    floor = (emo[list(synth_model.DISCRETE_EMOTIONS)] == 1.0).mean()
    assert floor.between(0.42, 0.58).all(), floor
    table = synth_model.correlation_table(mid, emo)
    assert (table["difference"].abs() < 0.1).all(), table


def test_default_dataset_correlations_near_real() -> None:
    mid, emo = synth_model.make_annotations(synth_model.sample_controls(360, 2025), 2025)
    table = synth_model.correlation_table(mid, emo)
    assert (table["difference"].abs() < 0.15).all(), table


def test_nuisance_explains_a_minority_share() -> None:
    controls = synth_model.sample_controls(6000, 1)
    _, emo = synth_model.make_annotations(controls, 1)

    def r2(x: np.ndarray, y: np.ndarray) -> float:
        x = np.column_stack([np.ones(len(x)), x])
        residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
        return 1 - residual.var() / y.var()

    mid, nuis = controls[list(MIDLEVEL)].to_numpy(), controls[list(synth_model.NUISANCE)].to_numpy()
    gains = {e: r2(np.hstack([mid, nuis]), emo[e].to_numpy()) - r2(mid, emo[e].to_numpy()) for e in EMOTIONS}
    for e in ("valence", "energy", "anger", "happy", "tender"):
        assert 0.03 < gains[e] < 0.3, gains
    assert all(g < 0.3 for g in gains.values())


def test_make_annotations_rejects_bad_controls() -> None:
    c = synth_model.sample_controls(3, 0)
    with pytest.raises(MerError, match="missing column.*tempo"):
        synth_model.make_annotations(c.drop(columns="tempo"), 0)
    with pytest.raises(MerError, match=r"\[0, 1\]"):
        synth_model.make_annotations(c.assign(tempo=2.0), 0)


def test_excerpts_are_independent_streams() -> None:
    assert synth_model.excerpt_plan(3, 5, 10.0) == synth_model.excerpt_plan(3, 5, 10.0)
    assert synth_model.excerpt_plan(3, 5, 10.0) != synth_model.excerpt_plan(4, 5, 10.0)
    duration, render_seed = synth_model.excerpt_plan(1, 0, 10.0)
    assert 9.0 <= duration <= 11.0 and isinstance(render_seed, int)


def test_correlation_table_is_nan_for_constant_columns() -> None:
    mid, emo = synth_model.make_annotations(synth_model.sample_controls(20, 2), 2)
    table = synth_model.correlation_table(mid.assign(dissonance=3.0), emo)
    assert math.isnan(table.loc[("valence", "dissonance"), "synthetic"])
    assert not math.isnan(table.loc[("valence", "melodiousness"), "synthetic"])
    assert list(table.columns) == ["real", "synthetic", "difference"] and len(table) == 13
    assert np.isnan(synth_model.correlation_table(mid.iloc[:1], emo.iloc[:1])["synthetic"]).all()


@pytest.mark.parametrize("check, value, match", [
    (lambda v: synth_model.check_seed(v), -1, "seed must be a non-negative integer"),
    (lambda v: synth_model.check_seed(v), True, "seed must be a non-negative integer"),
    (lambda v: synth_model.check_count(v, "n_excerpts"), 0, "n_excerpts must be a positive integer"),
    (lambda v: synth_model.check_count(v, "workers"), 2.0, "workers must be a positive integer"),
    (lambda v: synth_model.check_sample_rate(v), 4000, "sample_rate must be an integer >= 8000 Hz"),
    (lambda v: synth_model.check_sample_rate(v), False, "sample_rate must be an integer >= 8000 Hz"),
])
def test_checks_refuse_bad_values(check, value, match: str) -> None:
    with pytest.raises(MerError, match=match):
        check(value)


def test_checks_return_python_ints() -> None:
    values = (synth_model.check_seed(np.int64(0)), synth_model.check_count(np.int32(3), "n"),
              synth_model.check_sample_rate(np.int64(22050)))
    assert values == (0, 3, 22050) and all(type(v) is int for v in values)
