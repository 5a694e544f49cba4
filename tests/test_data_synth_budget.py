"""The synthetic data's variance budget and linear ceilings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.data.synth import budget, model
from mer_lib.errors import MerError


def test_budget_shares_sum_to_one_and_cover_the_real_lower_bounds():
    table = budget.variance_budget()
    assert list(table.index) == list(EMOTIONS)
    shares = table[["midlevel", "nuisance", "noise"]]
    assert (shares >= 0).all().all() and np.allclose(shares.sum(axis=1), 1.0)
    np.testing.assert_allclose(table["r_midlevel"], np.sqrt(table["midlevel"]))
    # the mid-level share is at least what one real annotation explains on its own
    quoted = table["real_single_feature_r2"].dropna()
    assert len(quoted) == 6 and (table.loc[quoted.index, "midlevel"] >= quoted).all()
    # emotions that name a nuisance control in EMOTION_LINKS get a nuisance share
    for emotion in EMOTIONS:
        linked = any(c in model.EMOTION_LINKS[emotion] for c in model.NUISANCE)
        assert (table.loc[emotion, "nuisance"] > 0.005) == linked, emotion


def test_budget_matches_a_monte_carlo_estimate():
    controls = model.sample_controls(20_000, 3)
    z = (controls.to_numpy() - 0.5) / model.control_sd()
    latent = z @ model.emotion_weights().to_numpy().T  # without the noise term
    mid = np.c_[np.ones(len(z)), z[:, :len(MIDLEVEL)]]
    fitted = mid @ np.linalg.lstsq(mid, latent, rcond=None)[0]
    table = budget.variance_budget()
    np.testing.assert_allclose(fitted.var(axis=0), table["midlevel"], atol=0.03)
    np.testing.assert_allclose(latent.var(axis=0), table["midlevel"] + table["nuisance"], atol=0.03)


def test_the_cue_share_matches_a_monte_carlo_estimate():
    from mer_lib.data.synth.cue import CueConfig, cue_latent

    config = CueConfig(emotion="anger", tracking=0.5)
    table = budget.variance_budget(config)
    shares = table[["midlevel", "nuisance", "cue", "noise"]]
    assert (shares >= 0).all().all() and np.allclose(shares.sum(axis=1), 1.0)
    assert table.loc["anger", "cue"] > 0.01 and (table.drop(index="anger")["cue"] == 0).all()
    controls = model.sample_controls(20_000, 5)
    latents = model.emotion_latents(controls, 5)
    z = (controls.to_numpy() - 0.5) / model.control_sd()
    design = np.c_[np.ones(len(z)), z, cue_latent(latents, model.explained_latents(controls), config).to_numpy()]
    y = latents["anger"].to_numpy()
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    expected = 1.0 - table.loc["anger", "noise"]
    assert fitted.var() / y.var() == pytest.approx(expected, abs=0.02)


def _frames(n=60, seed=0):
    controls = model.sample_controls(n, seed)
    midlevel, emotions = model.make_annotations(controls, seed)
    return emotions, midlevel, controls


def test_linear_ceiling_orders_the_predictor_sets():
    emotions, midlevel, controls = _frames(360, 11)
    table = budget.linear_ceiling(emotions, midlevel, controls)
    assert list(table.columns) == list(budget.CEILING_INPUTS) and list(table.index) == [*EMOTIONS, "mean"]
    mean = table.loc["mean"]
    assert 0.5 < mean["annotations"] < mean["all_controls"] <= 1.0


def test_linear_ceiling_is_one_for_an_exact_linear_map():
    emotions, midlevel, controls = _frames()
    exact = pd.DataFrame(midlevel.to_numpy() @ np.arange(56).reshape(7, 8) / 50.0, index=midlevel.index,
                         columns=list(EMOTIONS))
    table = budget.linear_ceiling(exact, midlevel, controls, n_folds=5)
    np.testing.assert_allclose(table["annotations"], 1.0, atol=1e-9)


@pytest.mark.parametrize("damage, match", [
    ("drop", "lacks columns"), ("reorder", "not indexed like"), ("short", "at least 20 excerpts"),
])
def test_linear_ceiling_refuses_bad_input(damage, match):
    emotions, midlevel, controls = _frames()
    if damage == "drop":
        controls = controls.drop(columns="tempo")
    elif damage == "reorder":
        midlevel = midlevel.iloc[::-1]
    else:
        emotions, midlevel, controls = emotions.iloc[:15], midlevel.iloc[:15], controls.iloc[:15]
    with pytest.raises(MerError, match=match):
        budget.linear_ceiling(emotions, midlevel, controls)
