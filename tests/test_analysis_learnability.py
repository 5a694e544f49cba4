"""Accuracy targets of the benchmark and per-feature bottleneck quality."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_lib.analysis import learnability
from mer_lib.config import MIDLEVEL
from mer_lib.errors import MerError


def _metrics(a2e, a2b2e, a2m2e, split="test"):
    rows = []
    for system, values in (("A2E", a2e), ("A2B2E", a2b2e), ("A2M2E", a2m2e)):
        rows += [{"system": system, "seed": s, "split": split, "mean_r": v} for s, v in enumerate(values)]
    rows.append({"system": "A2E", "seed": 0, "split": "train", "mean_r": 0.99})  # other splits are ignored
    return pd.DataFrame(rows)


def test_targets_hold_for_close_reliable_systems():
    a2e = np.array([0.74, 0.75, 0.73, 0.76, 0.74, 0.75, 0.745, 0.735])
    table = learnability.fidelity_targets(_metrics(a2e, a2e - 0.02, a2e - 0.03)).set_index("quantity")
    gap = table.loc["A2E - A2M2E mean r (paired by seed)"]
    assert gap["estimate"] == pytest.approx(0.03) and gap["meets"] and gap["verdict"] == "holds"
    sd = table.loc["seed SD of A2M2E mean r"]
    assert sd["estimate"] == pytest.approx(np.std(a2e, ddof=1)) and sd["ci_low"] < sd["estimate"] < sd["ci_high"]
    assert sd["verdict"] == "holds"
    assert table.loc["A2B2E mean r, between A2M2E and A2E", "verdict"] == "holds"
    assert table.loc["A2M2E mean r", "estimate"] == pytest.approx(a2e.mean() - 0.03)


def test_targets_fail_for_a_broken_interpretable_model():
    a2e = np.array([0.70, 0.71, 0.69, 0.70, 0.72])
    a2m2e = np.array([0.55, 0.50, 0.55, 0.61, 0.57])
    table = learnability.fidelity_targets(_metrics(a2e, a2e - 0.1, a2m2e)).set_index("quantity")
    assert table.loc["A2E - A2M2E mean r (paired by seed)", "verdict"] == "fails"
    assert not table.loc["seed SD of A2M2E mean r", "meets"]


def test_a_few_seeds_leave_the_sd_target_inconclusive():
    a2e = np.array([0.70, 0.71, 0.69])
    table = learnability.fidelity_targets(_metrics(a2e, a2e, a2e - np.array([0.02, 0.0, 0.035])))
    sd = table.set_index("quantity").loc["seed SD of A2M2E mean r"]
    assert sd["meets"] and sd["verdict"] == "inconclusive"  # 3 seeds: the chi-square interval is wide


def test_targets_refuse_incomplete_tables():
    with pytest.raises(MerError, match="no test results for \\['A2B2E'\\]"):
        learnability.fidelity_targets(_metrics([0.7, 0.7], [0.6, 0.6], [0.6, 0.6]).query("system != 'A2B2E'"))
    with pytest.raises(MerError, match="lacks columns"):
        learnability.fidelity_targets(pd.DataFrame({"system": ["A2E"]}))
    undecided = learnability.fidelity_targets(_metrics([0.7, np.nan], [0.6, 0.6], [0.6, 0.6]))
    assert list(undecided["quantity"]) == list(learnability.QUANTITIES)
    assert (undecided["verdict"] == "undecided").all() and undecided["estimate"].isna().all()


def _agreement(r_by_feature, system="A2M2E", seeds=(1, 2, 3)):
    rows = []
    for seed in seeds:
        for against in ("controls", "annotations"):
            rows.append({"system": system, "seed": seed, "against": against,
                         **{f: r + 0.01 * seed for f, r in zip(MIDLEVEL, r_by_feature)}})
    return pd.DataFrame(rows)


def test_feature_quality_explains_the_features_below_the_bar():
    unit_r = [0.8, 0.7, 0.6, 0.2, 0.9, 0.6, 0.3]
    probe_r = [0.8, 0.7, 0.6, 0.1, 0.9, 0.6, 0.7]
    table = learnability.feature_quality(_agreement(unit_r), _agreement(probe_r, "A2E"))
    assert list(table.index) == list(MIDLEVEL)
    np.testing.assert_allclose(table["r_annotations"], np.array(unit_r) + 0.02)
    assert (table["ci_low"] <= table["r_annotations"]).all() and (table["r_annotations"] <= table["ci_high"]).all()
    assert table["learned"].tolist() == [True, True, True, False, True, True, False]
    assert "neither model" in table.loc["rhythm_stability", "why_not"]
    assert "the audio carries it" in table.loc["minorness", "why_not"]
    assert table.loc["melodiousness", "why_not"] == ""
    without = learnability.feature_quality(_agreement(unit_r))
    assert without["probe_r_annotations"].isna().all() and "neither model" in without.loc["minorness", "why_not"]
    with pytest.raises(MerError, match="no bottleneck agreement rows for A2M2E"):
        learnability.feature_quality(_agreement(unit_r, "A2B2E"))
