"""The analysis functions against direct scipy/numpy computations, and on the published runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from mer_lib.analysis import stats
from mer_lib.attacks import logs as attack_logs
from mer_lib.attacks.logs import read_published_runs, tidy_columns
from mer_lib.config import EMOTIONS, SYSTEMS
from mer_lib.errors import MerError

TRUE, ORIG, NEW = tidy_columns("true"), tidy_columns("orig"), tidy_columns("new")


def make_logs(systems=("A2E", "A2M2E"), seeds=(1, 2, 3), n=12, seed=0) -> pd.DataFrame:
    """Random attack logs of the tidy shape: shared labels per excerpt, noisy predictions."""
    rng = np.random.default_rng(seed)
    numbers = np.sort(rng.choice(np.arange(1, 361), size=n, replace=False))
    labels = rng.uniform(0.1, 0.8, size=(n, len(EMOTIONS)))
    parts = []
    for k, system in enumerate(systems):
        for s in seeds:
            orig = labels + rng.normal(0, 0.1, size=labels.shape)
            new = orig + rng.normal(0, 0.5 + 0.5 * k, size=labels.shape)
            df = pd.DataFrame({"system": system, "seed": s, "number": numbers,
                               "iterations": rng.integers(1, 1001, n), "db_reference": rng.normal(35, 5, n),
                               "norm": rng.gamma(2.0, 10.0, n), "converged": rng.random(n) < 0.3,
                               "adv_target": -0.5})
            df[TRUE], df[ORIG], df[NEW] = labels, orig, new
            parts.append(df)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def published(published_runs) -> pd.DataFrame:
    return read_published_runs(published_runs)


# --------------------------------------------------------------------------- correlation / per model
def test_per_model_metrics_match_direct_computation():
    logs = make_logs(systems=("A2M2E", "A2E"), seeds=(7, 3))
    pm = attack_logs.per_model_metrics(logs)
    assert list(zip(pm["system"], pm["seed"])) == [("A2E", 3), ("A2E", 7), ("A2M2E", 3), ("A2M2E", 7)]
    for row in pm.itertuples():
        g = logs[(logs["system"] == row.system) & (logs["seed"] == row.seed)]
        t, o, n = g[TRUE].to_numpy(), g[ORIG].to_numpy(), g[NEW].to_numpy()
        r_clean = np.mean([sps.pearsonr(t[:, j], o[:, j]).statistic for j in range(8)])
        r_adv = np.mean([sps.pearsonr(t[:, j], n[:, j]).statistic for j in range(8)])
        assert row.clean_r == pytest.approx(r_clean, rel=1e-12)
        assert row.adv_r == pytest.approx(r_adv, rel=1e-12)
        assert row.clean_mae == pytest.approx(np.abs(o - t).mean(), rel=1e-12)
        assert row.adv_mae == pytest.approx(np.abs(n - t).mean(), rel=1e-12)
        assert row.dmae == pytest.approx(np.abs(n - t).mean() - np.abs(o - t).mean(), rel=1e-12)
        assert row.n_excerpts == len(g) and row.clean_r_emotions == 8 and row.adv_r_emotions == 8


def test_per_model_metrics_reports_undefined_emotions():
    logs = make_logs(systems=("A2E",), seeds=(1,))
    logs["orig_sad"] = 0.2  # a model predicting a constant for one emotion
    row = attack_logs.per_model_metrics(logs).iloc[0]
    assert row["clean_r_emotions"] == 7 and row["adv_r_emotions"] == 8
    t, o = logs[TRUE].to_numpy(), logs[ORIG].to_numpy()
    keep = [j for j, e in enumerate(EMOTIONS) if e != "sad"]
    assert row["clean_r"] == pytest.approx(np.mean([sps.pearsonr(t[:, j], o[:, j]).statistic for j in keep]))
    per_emotion = attack_logs.per_emotion_pearson(logs)
    assert np.isnan(per_emotion.loc[0, "sad"]) and per_emotion.loc[0, "valence"] == pytest.approx(
        sps.pearsonr(t[:, 0], o[:, 0]).statistic)


def test_input_errors():
    logs = make_logs()
    with pytest.raises(MerError, match="missing columns"):
        attack_logs.per_model_metrics(logs.drop(columns=["new_tender"]))
    with pytest.raises(MerError, match="repeat"):
        attack_logs.per_model_metrics(pd.concat([logs, logs.iloc[:1]]))
    with pytest.raises(MerError, match="which"):
        stats.per_excerpt_mae(logs, which="adv")
    with pytest.raises(MerError, match="empty"):
        attack_logs.per_model_metrics(logs.iloc[:0])


# --------------------------------------------------------------------------- Table 1
def test_table1_mean_and_sample_std_over_seeds():
    logs = make_logs(systems=("A2M2E", "aA2E", "A2E"), seeds=(1, 2, 3, 4))
    pm = attack_logs.per_model_metrics(logs)
    t1 = stats.table1(logs)
    assert t1["system"].tolist() == ["A2E", "aA2E", "A2M2E"]  # the paper's order
    for row in t1.itertuples():
        g = pm[pm["system"] == row.system]
        assert row.n_seeds == 4
        assert row.r_mean == pytest.approx(g["clean_r"].mean())
        assert row.r_std == pytest.approx(np.std(g["clean_r"].to_numpy(), ddof=1))
        assert row.mae_mean == pytest.approx(g["clean_mae"].mean())
        assert row.mae_std == pytest.approx(np.std(g["clean_mae"].to_numpy(), ddof=1))
    assert t1.iloc[0]["r (mean ± std)"] == f"{t1.iloc[0]['r_mean']:.3f} ± {t1.iloc[0]['r_std']:.3f}"
    pd.testing.assert_frame_equal(stats.table1(pm), t1)  # accepts the per-model table too


def test_table1_single_seed_has_no_std():
    t1 = stats.table1(make_logs(systems=("A2E",), seeds=(5,)))
    assert np.isnan(t1.loc[0, "r_std"]) and t1.loc[0, "MAE (mean ± std)"].endswith("± n/a")


def test_dmae_summary():
    logs = make_logs(seeds=(1, 2, 3, 4, 5))
    pm = attack_logs.per_model_metrics(logs)
    s = stats.dmae_summary(pm).set_index("system")
    for system, g in pm.groupby("system"):
        assert s.loc[system, "median"] == pytest.approx(np.median(g["dmae"]))
        assert s.loc[system, "n_models"] == 5 and s.loc[system, "max"] == pytest.approx(g["dmae"].max())


def test_table1_t_interval_over_models():
    logs = make_logs(systems=("A2E", "A2M2E"), seeds=(1, 2, 3, 4, 5, 6))
    pm = attack_logs.per_model_metrics(logs)
    t1 = stats.table1(pm, n_boot=2000, seed=4)
    for col in ("r_ci_low", "r_ci_high", "mae_ci_low", "mae_ci_high", "r (mean, 95% CI)", "MAE (mean, 95% CI)",
                "r (mean ± std)", "MAE (mean ± std)"):
        assert col in t1.columns
    for row in t1.to_dict("records"):
        g = pm[pm["system"] == row["system"]]
        assert row["r_ci_low"] < row["r_mean"] < row["r_ci_high"]
        assert row["mae_ci_low"] < row["mae_mean"] < row["mae_ci_high"]
        # the CI is a t-interval over the system's models (one value per seed)
        assert (row["r_ci_low"], row["r_ci_high"]) == stats.t_interval(g["clean_r"])
        assert (row["mae_ci_low"], row["mae_ci_high"]) == stats.t_interval(g["clean_mae"])
        assert row["r (mean, 95% CI)"] == f"{row['r_mean']:.3f} [{row['r_ci_low']:.3f}, {row['r_ci_high']:.3f}]"
    pd.testing.assert_frame_equal(stats.table1(logs, n_boot=2000, seed=4), t1)  # deterministic
    t90 = stats.table1(pm, decimals=2, n_boot=2000, seed=4, level=0.9)
    assert "MAE (mean, 90% CI)" in t90.columns and "MAE (mean, 95% CI)" not in t90.columns
    assert (t90["r_ci_low"] >= t1["r_ci_low"]).all() and (t90["r_ci_high"] <= t1["r_ci_high"]).all()
    with pytest.raises(MerError, match="level"):
        stats.table1(pm, level=95)
    with pytest.raises(MerError, match="n_boot"):
        stats.table1(pm, n_boot=0)


def test_table1_and_dmae_summary_single_model_have_no_ci():
    pm = attack_logs.per_model_metrics(make_logs(systems=("A2E", "A2M2E"), seeds=(5,)))
    t1 = stats.table1(pm, n_boot=100)
    assert t1[["r_ci_low", "r_ci_high", "mae_ci_low", "mae_ci_high"]].isna().all().all()
    assert t1.loc[0, "r (mean, 95% CI)"] == f"{t1.loc[0, 'r_mean']:.3f} [n/a]"
    s = stats.dmae_summary(pm, n_boot=100)
    assert s[["mean_ci_low", "mean_ci_high", "median_ci_low", "median_ci_high"]].isna().all().all()
    assert s["median"].notna().all()


def test_dmae_summary_ci_columns():
    pm = attack_logs.per_model_metrics(make_logs(seeds=(1, 2, 3, 4, 5, 6, 7)))
    s = stats.dmae_summary(pm, n_boot=2000, seed=2)
    for row in s.to_dict("records"):
        d = pm.loc[pm["system"] == row["system"], "dmae"]
        assert row["mean_ci_low"] <= row["mean"] <= row["mean_ci_high"]
        assert row["median_ci_low"] <= row["median"] <= row["median_ci_high"]
        assert (row["median_ci_low"], row["median_ci_high"]) == stats.bootstrap_ci(d, np.median, n_boot=2000, seed=2)
        # a percentile bootstrap of the median lies within the observed values
        assert d.min() <= row["median_ci_low"] and row["median_ci_high"] <= d.max()
    pd.testing.assert_frame_equal(stats.dmae_summary(pm, n_boot=2000, seed=2), s)


# --------------------------------------------------------------------------- verdicts and system contrasts
def test_verdict_rule():
    assert stats.verdict(0.1, 0.3) == "holds"
    assert stats.verdict(-0.3, -0.1) == "contradicted"
    assert stats.verdict(-0.1, 0.3) == "inconclusive"
    assert stats.verdict(0.0, 0.3) == "inconclusive"  # strictly on one side
    assert stats.verdict(-0.3, -0.1, direction=-1) == "holds"
    assert stats.verdict(0.1, 0.3, direction=-1) == "contradicted"
    assert stats.verdict(np.nan, 0.3) == "undecided" and stats.verdict(0.1, 0.3, estimate=np.nan) == "undecided"
    with pytest.raises(MerError, match="direction"):
        stats.verdict(0.1, 0.3, direction=0)


def _models(values: dict, quantity: str = "dmae") -> pd.DataFrame:
    """A per-model table: one row per (system, seed) with the given values of ``quantity``."""
    return pd.DataFrame([{"system": s, "seed": k, quantity: float(v)}
                         for s, vs in values.items() for k, v in enumerate(vs, start=1)])


def test_system_contrasts_verdicts():
    rng = np.random.default_rng(7)
    separated = _models({"A2E": 1.6 + 0.05 * rng.standard_normal(7), "A2M2E": 1.0 + 0.05 * rng.standard_normal(6)})
    overlapping = _models({"A2E": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "A2M2E": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]})
    pairs = [("A2E", "A2M2E"), ("A2M2E", "A2E")]
    res = stats.system_contrasts(separated, pairs, n_boot=2000)
    assert list(res.columns) == ["a", "b", "quantity", "stat", "n_a", "n_b", "estimate", "ci_low", "ci_high",
                                 "verdict"]
    assert res["verdict"].tolist() == ["holds", "contradicted"]  # well separated; then swapped
    assert res[["n_a", "n_b"]].values.tolist() == [[7, 6], [6, 7]]
    d = separated.groupby("system")["dmae"].median()
    assert res.loc[0, "estimate"] == pytest.approx(d["A2E"] - d["A2M2E"])
    assert res.loc[0, "ci_low"] < res.loc[0, "estimate"] < res.loc[0, "ci_high"]
    # swapping the pair mirrors the interval (the same draws of each system)
    assert res.loc[1, "ci_low"] == pytest.approx(-res.loc[0, "ci_high"])
    noisy = stats.system_contrasts(overlapping, pairs, n_boot=2000)
    assert noisy["verdict"].tolist() == ["inconclusive", "inconclusive"]
    assert noisy.loc[0, "estimate"] == pytest.approx(-0.5) and noisy.loc[0, "ci_low"] < 0 < noisy.loc[0, "ci_high"]
    means = stats.system_contrasts(overlapping, [("A2M2E", "A2E")], stat="mean", n_boot=2000)
    assert means.loc[0, "estimate"] == pytest.approx(0.5) and means.loc[0, "stat"] == "mean"


def test_system_contrasts_undecided_and_determinism():
    one_each = _models({"A2E": [1.6], "A2M2E": [1.0]})
    res = stats.system_contrasts(one_each, [("A2E", "A2M2E"), ("A2B2E", "A2M2E")], n_boot=500)
    assert res.loc[0, "estimate"] == pytest.approx(0.6) and np.isnan(res.loc[0, "ci_low"])
    assert np.isnan(res.loc[1, "estimate"]) and res.loc[1, "n_a"] == 0
    assert res["verdict"].tolist() == ["undecided", "undecided"]
    pm = attack_logs.per_model_metrics(make_logs(systems=("A2E", "A2B2E", "A2M2E"), seeds=(1, 2, 3, 4)))
    first = stats.system_contrasts(pm, stats.DEFAULT_PAIRS, quantity="adv_mae", n_boot=2000, seed=5)
    pd.testing.assert_frame_equal(first, stats.system_contrasts(pm.iloc[::-1], stats.DEFAULT_PAIRS, quantity="adv_mae",
                                                            n_boot=2000, seed=5))  # row order is irrelevant
    # a pair's interval does not depend on the other pairs asked for
    alone = stats.system_contrasts(pm, [stats.DEFAULT_PAIRS[1]], quantity="adv_mae", n_boot=2000, seed=5)
    assert alone.loc[0, ["ci_low", "ci_high"]].tolist() == first.loc[1, ["ci_low", "ci_high"]].tolist()
    other = stats.system_contrasts(pm, stats.DEFAULT_PAIRS, quantity="adv_mae", n_boot=2000, seed=6)
    assert other["estimate"].tolist() == first["estimate"].tolist()
    assert other["ci_low"].tolist() != first["ci_low"].tolist()
    with pytest.raises(MerError, match="stat"):
        stats.system_contrasts(pm, stat="mode")
    with pytest.raises(MerError, match="no column 'nope'"):
        stats.system_contrasts(pm, quantity="nope")
    logs = make_logs(systems=("A2E", "A2M2E"), seeds=(1, 2, 3))
    pd.testing.assert_frame_equal(stats.system_contrasts(logs, [("A2E", "A2M2E")], n_boot=300),
                                  stats.system_contrasts(attack_logs.per_model_metrics(logs), [("A2E", "A2M2E")], n_boot=300))
    with pytest.raises(MerError, match="seed"):
        stats.system_contrasts(pm, seed=-1)


# --------------------------------------------------------------------------- per-excerpt MAE and tests
def test_per_excerpt_mae():
    logs = make_logs()
    for which, cols in (("new", NEW), ("orig", ORIG)):
        pe = stats.per_excerpt_mae(logs, which)
        assert len(pe) == len(logs) and list(pe.columns) == ["system", "seed", "number", "mae"]
        merged = pe.merge(logs, on=["system", "seed", "number"])
        expected = np.abs(merged[cols].to_numpy() - merged[TRUE].to_numpy()).mean(axis=1)
        np.testing.assert_allclose(merged["mae"], expected, rtol=1e-12)


def test_paired_ttests_match_scipy_and_formulas():
    logs = make_logs(systems=("A2E", "A2B2E", "A2M2E"), seeds=(1, 2, 3), n=10)
    res = stats.paired_ttests(logs, n_boot=2000, seed=3)
    assert res[["a", "b"]].values.tolist() == [["A2E", "A2M2E"], ["A2B2E", "A2M2E"]]
    pe = stats.per_excerpt_mae(logs)
    for row in res.itertuples():
        a = pe[pe["system"] == row.a].sort_values(["seed", "number"])["mae"].to_numpy()
        b = pe[pe["system"] == row.b].sort_values(["seed", "number"])["mae"].to_numpy()
        ref = sps.ttest_rel(a, b)
        assert row.n_pairs == 30 and row.df == 29
        assert row.t == pytest.approx(ref.statistic, rel=1e-12)
        assert row.p == pytest.approx(ref.pvalue, rel=1e-10)
        diff = a - b
        assert row.mean_diff == pytest.approx(diff.mean(), rel=1e-12)
        assert row.cohens_d == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-12)
        # for paired samples t = d * sqrt(n)
        assert row.t == pytest.approx(row.cohens_d * np.sqrt(row.n_pairs), rel=1e-10)
        assert row.ci_low < row.mean_diff < row.ci_high
    again = stats.paired_ttests(logs, n_boot=2000, seed=3)
    pd.testing.assert_frame_equal(res, again)  # seeded: identical


def test_pairing_errors():
    logs = make_logs(systems=("A2E", "A2M2E"), seeds=(1, 2))
    with pytest.raises(MerError, match="do not align"):  # one excerpt missing
        stats.paired_ttests(logs.drop(index=logs.index[-1]), pairs=[("A2E", "A2M2E")], n_boot=10)
    shifted = logs.copy()
    shifted.loc[shifted["system"] == "A2M2E", "seed"] += 10  # different seeds
    with pytest.raises(MerError, match="do not align"):
        stats.paired_ttests(shifted, pairs=[("A2E", "A2M2E")], n_boot=10)
    renumbered = logs.copy()
    renumbered.loc[renumbered["system"] == "A2E", "number"] += 1000  # different excerpts
    with pytest.raises(MerError, match="do not align"):
        stats.paired_ttests(renumbered, pairs=[("A2E", "A2M2E")], n_boot=10)
    with pytest.raises(MerError, match="no attack logs of system 'A2B2E'"):
        stats.paired_ttests(logs, pairs=[("A2B2E", "A2M2E")], n_boot=10)


def test_cohens_d_paired():
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([0.5, 1.0, 3.0, 5.0])
    d = a - b
    assert stats.cohens_d_paired(a, b) == pytest.approx(d.mean() / np.sqrt(((d - d.mean()) ** 2).sum() / 3))
    assert np.isnan(stats.cohens_d_paired(a, a - 1.0))  # constant differences


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_coverage_on_simulated_data():
    rng = np.random.default_rng(12345)
    true_mean, hits, n_sim = 0.3, 0, 200
    for i in range(n_sim):
        sample = rng.normal(true_mean, 1.0, size=40)
        lo, hi = stats.bootstrap_ci(sample, n_boot=400, seed=i, level=0.95)
        hits += lo <= true_mean <= hi
    coverage = hits / n_sim
    assert 0.90 <= coverage <= 0.99, coverage


def test_bootstrap_ci_properties():
    x = np.random.default_rng(0).exponential(size=50)
    lo, hi = stats.bootstrap_ci(x, n_boot=1000, seed=1)
    assert lo < x.mean() < hi
    assert stats.bootstrap_ci(x, n_boot=1000, seed=1) == (lo, hi)  # deterministic
    # a statistic without an axis argument gives the same interval (same resamples)
    assert stats.bootstrap_ci(x, stat=lambda v: float(np.mean(v)), n_boot=1000, seed=1) == pytest.approx((lo, hi))
    lo90, hi90 = stats.bootstrap_ci(x, n_boot=1000, seed=1, level=0.9)
    assert lo <= lo90 <= hi90 <= hi
    mlo, mhi = stats.bootstrap_ci(x, stat=np.median, n_boot=1000, seed=1)
    assert mlo <= np.median(x) <= mhi
    for bad in ({"values": [1.0]}, {"values": [1.0, np.nan]}, {"values": x, "level": 1.0},
                {"values": x, "n_boot": 0}):
        with pytest.raises(MerError):
            stats.bootstrap_ci(**bad)


# --------------------------------------------------------------------------- perturbations
def test_perturbation_stats():
    logs = make_logs(n=20)
    ps = stats.perturbation_stats(logs).set_index("system")
    assert "snr_db_median" not in ps.columns
    for system, g in logs.groupby("system"):
        q1, q3 = np.percentile(g["norm"], [25, 75])
        assert ps.loc[system, "norm_median"] == pytest.approx(np.median(g["norm"]))
        assert ps.loc[system, "norm_iqr"] == pytest.approx(q3 - q1)
        assert ps.loc[system, "iterations_mean"] == pytest.approx(g["iterations"].mean())
        assert ps.loc[system, "iterations_median"] == pytest.approx(np.median(g["iterations"]))
        assert ps.loc[system, "db_reference_median"] == pytest.approx(np.median(g["db_reference"]))
        assert ps.loc[system, "converged_share"] == pytest.approx(g["converged"].mean())
    with_snr = logs.assign(snr_db=np.arange(len(logs), dtype=float))
    ps2 = stats.perturbation_stats(with_snr, by=("system", "seed"))
    assert len(ps2) == 6 and "snr_db_median" in ps2.columns
    g = with_snr[(with_snr["system"] == "A2E") & (with_snr["seed"] == 1)]
    assert ps2.iloc[0]["snr_db_median"] == pytest.approx(np.median(g["snr_db"]))


# --------------------------------------------------------------------------- the published runs
def test_published_runs_table1_dmae_and_ttests(published):
    pm = attack_logs.per_model_metrics(published)
    assert len(pm) == 50 and (pm["n_excerpts"] == 36).all() and (pm["clean_r_emotions"] == 8).all()
    t1 = stats.table1(pm)
    assert t1["system"].tolist() == list(SYSTEMS) and (t1["n_seeds"] == 10).all()
    assert t1["r_mean"].between(0.6, 0.8).all() and t1["mae_mean"].between(0.08, 0.13).all()
    # the black box is the best model on clean data
    assert t1.set_index("system")["r_mean"].idxmax() == "A2E"
    med = stats.dmae_summary(pm).set_index("system")["median"]
    # the paper: A2M2E about as robust as adversarial training (~1.0) vs ~1.6 for A2E / A2B2E
    assert med["A2M2E"] == pytest.approx(1.0, abs=0.1)
    assert med[["aA2E", "aA2B2E"]].between(0.9, 1.1).all()
    assert med[["A2E", "A2B2E"]].between(1.4, 1.7).all()
    tt = stats.paired_ttests(published, n_boot=2000)
    assert (tt["n_pairs"] == 360).all() and (tt["df"] == 359).all()
    assert (tt["mean_diff"] > 0).all() and (tt["p"] < 1e-6).all() and (tt["ci_low"] > 0).all()
    ps = stats.perturbation_stats(published)
    assert (ps["iterations_median"] == 1000).all() and (ps["converged_share"] == 0).all()


def _per_model(dmae: dict, clean_r: dict, seeds=(1, 2, 3)) -> pd.DataFrame:
    rows = [{"system": s, "seed": k, "dmae": dmae[s] + 0.01 * i, "clean_r": clean_r[s] - 0.005 * i,
             "adv_mae": 0.1 + dmae[s] + 0.01 * i} for s in dmae for i, k in enumerate(seeds)]
    return pd.DataFrame(rows)


def test_paper_findings_values_and_rules():
    dmae = {"A2E": 1.6, "aA2E": 1.0, "A2B2E": 1.5, "aA2B2E": 1.0, "A2M2E": 0.9}
    clean = {"A2E": 0.73, "aA2E": 0.68, "A2B2E": 0.70, "aA2B2E": 0.67, "A2M2E": 0.68}
    found = stats.paper_findings(_per_model(dmae, clean)).set_index("measure")
    assert found.loc["median dMAE: A2E - A2M2E", "estimate"] == pytest.approx(0.7)
    assert found.loc["median dMAE: A2B2E - aA2B2E", "estimate"] == pytest.approx(0.5)
    closer = "median dMAE: |A2M2E - adv. trained| - |A2M2E - plain black boxes|"
    assert found.loc[closer, "estimate"] == pytest.approx(abs(0.9 - 1.0) - abs(0.9 - 1.55))
    assert found.loc["mean clean r: A2E - best other system", "estimate"] == pytest.approx(0.03)
    assert found.loc["mean MAE after attack: A2E - A2M2E", "estimate"] == pytest.approx(0.7)
    assert found["holds"].tolist() == [True] * len(found)
    assert (found["unit"] == "models (seeds)").all()
    # the same rules fail when the interpretable model is the least robust and the best model
    dmae["A2M2E"], clean["A2M2E"] = 2.0, 0.80
    flipped = stats.paper_findings(_per_model(dmae, clean)).set_index("measure")["holds"]
    assert not flipped["median dMAE: A2E - A2M2E"] and not flipped["mean clean r: A2E - A2M2E"]
    assert not flipped["mean clean r: A2E - best other system"] and not flipped[closer]
    assert not flipped["mean MAE after attack: A2B2E - A2M2E"]
    assert flipped["median dMAE: A2E - aA2E"]


def test_paper_findings_mean_rows_are_welch_over_models_and_missing_systems_undecided():
    logs = make_logs(systems=("A2E", "A2B2E", "A2M2E"), seeds=(1, 2, 3))
    pm = attack_logs.per_model_metrics(logs)
    found = stats.paper_findings(pm, n_boot=200).set_index("measure")
    for measure, quantity, a in (("mean MAE after attack: A2E - A2M2E", "adv_mae", "A2E"),
                                 ("mean clean r: A2E - A2M2E", "clean_r", "A2E")):
        va = pm.loc[pm["system"] == a, quantity].to_numpy()
        vb = pm.loc[pm["system"] == "A2M2E", quantity].to_numpy()
        low, high, p = stats.welch_interval(va, vb)
        row = found.loc[measure]
        assert (row["ci_low"], row["ci_high"], row["p"]) == (low, high, p)
        assert row["estimate"] == pytest.approx(va.mean() - vb.mean())
    # the per-model test agrees with scipy's Welch test
    va = pm.loc[pm["system"] == "A2B2E", "adv_mae"].to_numpy()
    vb = pm.loc[pm["system"] == "A2M2E", "adv_mae"].to_numpy()
    assert stats.welch_interval(va, vb)[2] == pytest.approx(sps.ttest_ind(va, vb, equal_var=False).pvalue)
    # no adversarially trained systems: those findings are undecided, not False
    adv = found[found.index.str.contains("aA2")]
    assert adv["holds"].isna().all() and adv["estimate"].isna().all() and (adv["verdict"] == "undecided").all()
    assert adv[["ci_low", "ci_high"]].isna().all().all()


def test_paper_findings_in_several_measures():
    logs = make_logs(systems=("A2E", "A2M2E"), seeds=(1, 2, 3, 4))
    pm = attack_logs.per_model_metrics(logs)
    both = stats.paper_findings(pm, ("dmae", "dmae_rel"), n_boot=300)
    assert set(both["quantity"]) == {"dmae", "dmae_rel", "clean_r", "adv_mae"}
    rel = both.set_index("measure").loc["median dMAE / clean spread: A2E - A2M2E"]
    point = pm.groupby("system")["dmae_rel"].median()
    assert rel["estimate"] == pytest.approx(point["A2E"] - point["A2M2E"])
    # the relative measure does not move when a model's outputs are scaled about their mean
    scaled = pm.assign(dmae=pm["dmae"] * 10.0, clean_spread=pm["clean_spread"] * 10.0)
    scaled["dmae_rel"] = scaled["dmae"] / scaled["clean_spread"]
    again = stats.paper_findings(scaled, ("dmae_rel",), n_boot=300).set_index("measure")
    assert again.loc["median dMAE / clean spread: A2E - A2M2E", "estimate"] == pytest.approx(rel["estimate"])
    with pytest.raises(MerError, match="measures"):
        stats.paper_findings(pm, ("norm",))


def test_paper_findings_joint_bootstrap():
    rng = np.random.default_rng(11)
    centre = {"A2E": (1.6, 0.73), "aA2E": (1.0, 0.69), "A2B2E": (1.5, 0.70), "aA2B2E": (1.0, 0.67),
              "A2M2E": (1.05, 0.68)}
    pm = pd.DataFrame([{"system": s, "seed": k, "dmae": d + 0.15 * rng.standard_normal(),
                        "clean_r": r + 0.02 * rng.standard_normal(), "adv_mae": 0.1 + d}
                       for s, (d, r) in centre.items() for k in range(6)])
    pm["adv_mae"] += 0.1 * rng.standard_normal(len(pm))
    found = stats.paper_findings(pm, n_boot=2000, seed=3)
    assert list(found.columns[:9]) == ["finding", "measure", "quantity", "unit", "estimate", "ci_low", "ci_high",
                                       "verdict", "holds"]
    assert (found["unit"] == "models (seeds)").all() and found["ci_low"].notna().all()
    assert (found["ci_low"] <= found["estimate"]).all() and (found["estimate"] <= found["ci_high"]).all()
    for rec in found.to_dict("records"):
        direction = -1 if "|A2M2E" in rec["measure"] else 1
        assert rec["verdict"] == stats.verdict(rec["ci_low"], rec["ci_high"], direction)
        assert rec["holds"] == (rec["verdict"] == "holds")
    # the same draws as system_contrasts: the same interval for the same contrast
    by_measure = found.set_index("measure")
    contrasts = stats.system_contrasts(pm, [("A2E", "A2M2E"), ("A2B2E", "aA2B2E")], n_boot=2000, seed=3)
    for rec in contrasts.to_dict("records"):
        row = by_measure.loc[f"median dMAE: {rec['a']} - {rec['b']}"]
        assert (row["ci_low"], row["ci_high"]) == (rec["ci_low"], rec["ci_high"])
    clean = stats.system_contrasts(pm, [("A2E", "A2M2E")], quantity="clean_r", stat="mean", n_boot=2000, seed=3)
    assert by_measure.loc["mean clean r: A2E - A2M2E", "ci_low"] == clean.loc[0, "ci_low"]
    # the closeness and best-other findings get intervals around their estimates too
    closer = "median dMAE: |A2M2E - adv. trained| - |A2M2E - plain black boxes|"
    assert by_measure.loc[closer, "ci_low"] < by_measure.loc[closer, "ci_high"]
    best = by_measure.loc["mean clean r: A2E - best other system"]
    pair = stats.welch_interval(pm.loc[pm["system"] == "A2E", "clean_r"], pm.loc[pm["system"] == "aA2E", "clean_r"])
    assert best["ci_low"] < pair[0]  # Bonferroni over the 4 other systems: wider than one pair's interval
    pd.testing.assert_frame_equal(stats.paper_findings(pm, n_boot=2000, seed=3), found)  # deterministic
    assert stats.paper_findings(pm, n_boot=2000, seed=4)["ci_low"].tolist() != found["ci_low"].tolist()


def test_paper_findings_on_the_published_runs(published):
    found = stats.paper_findings(attack_logs.per_model_metrics(published), ("dmae", "dmae_rel"), n_boot=2000)
    assert len(found) == 15
    # with the model as the unit (10 per system), every finding holds on the published runs, in both measures
    assert (found["verdict"] == "holds").all() and found["holds"].all()
    assert (found["ci_low"] <= found["estimate"]).all() and (found["estimate"] <= found["ci_high"]).all()


# --------------------------------------------------------------------------- verdicts, comparisons
_GOOD_DMAE = {"A2E": 1.6, "aA2E": 1.0, "A2B2E": 1.5, "aA2B2E": 1.0, "A2M2E": 0.9}
_GOOD_CLEAN = {"A2E": 0.73, "aA2E": 0.68, "A2B2E": 0.70, "aA2B2E": 0.67, "A2M2E": 0.68}


def _good_and_flipped() -> tuple[pd.DataFrame, pd.DataFrame]:
    good = stats.paper_findings(_per_model(_GOOD_DMAE, _GOOD_CLEAN), n_boot=2000)
    flipped = stats.paper_findings(_per_model({**_GOOD_DMAE, "A2M2E": 2.0}, {**_GOOD_CLEAN, "A2M2E": 0.80}),
                                   n_boot=2000)
    return good, flipped


def test_findings_verdicts_follow_the_numbers():
    good, flipped = _good_and_flipped()
    assert (good["verdict"] == "holds").all() and len(good) == 10
    # the least robust and best clean model: only the findings not about A2M2E still hold
    assert flipped["verdict"].value_counts().to_dict() == {"contradicted": 7, "holds": 3}
    some = stats.paper_findings(pd.concat([_models({"A2E": [1.0, 2.0, 3.0, 4.0], "A2M2E": [1.5, 2.5, 3.5, 4.5],
                                                    "A2B2E": [2.0]}).assign(clean_r=0.7, adv_mae=1.0)]), n_boot=500)
    by_measure = some.set_index("measure")["verdict"]
    assert by_measure["median dMAE: A2E - A2M2E"] == "inconclusive"
    assert by_measure["median dMAE: A2B2E - A2M2E"] == "undecided"  # a system with a single model


def test_compare_findings():
    good, flipped = _good_and_flipped()
    both = stats.compare_findings(good, flipped)
    assert len(both) == len(good) and both["measure"].tolist() == good["measure"].tolist()
    assert {"estimate (default kernels)", "ci_low (avx2-capped)", "verdict (avx2-capped)", "agree"} <= set(both)
    agree = both.set_index("measure")["agree"]
    assert not agree["median dMAE: A2E - A2M2E"] and agree["median dMAE: A2E - aA2E"]
    assert agree.sum() == 3
    assert stats.compare_findings(good, good, labels=("x", "y"))["agree"].all()
    partial = stats.compare_findings(good, flipped.iloc[2:], labels=("one", "two"))
    assert len(partial) == len(good) and not partial["agree"].iloc[:2].any()
    assert partial["verdict (two)"].iloc[:2].isna().all()
    with pytest.raises(MerError, match="labels"):
        stats.compare_findings(good, flipped, labels=("same", "same"))


def test_seeds_for_power_formula_and_edge_cases():
    rows = [{"system": s, "seed": i, "dmae": v} for s, vals in (("A2E", [0.5, 0.7, 0.6, 0.8]),
                                                                ("A2M2E", [0.4, 0.5, 0.45, 0.55]))
            for i, v in enumerate(vals)]
    pm = pd.DataFrame(rows)
    out = stats.seeds_for_power(pm, [("A2E", "A2M2E")])
    d = 0.65 - 0.475
    var = (np.var([0.5, 0.7, 0.6, 0.8], ddof=1) + np.var([0.4, 0.5, 0.45, 0.55], ddof=1)) / 2
    z = 1.959964 + 0.841621
    assert out.loc[0, "difference"] == pytest.approx(d)
    assert out.loc[0, "seeds_needed"] == np.ceil(2 * z ** 2 * var / d ** 2)
    # a smaller difference needs more seeds; one model per system cannot say
    closer = pm.assign(dmae=np.where(pm["system"] == "A2E", pm["dmae"] - 0.1, pm["dmae"]))
    assert stats.seeds_for_power(closer, [("A2E", "A2M2E")]).loc[0, "seeds_needed"] > out.loc[0, "seeds_needed"]
    single = pm.groupby("system").head(1)
    assert np.isnan(stats.seeds_for_power(single, [("A2E", "A2M2E")]).loc[0, "seeds_needed"])
    with pytest.raises(MerError):
        stats.seeds_for_power(pm, [("A2E", "A2M2E")], power=1.5)


# --------------------------------------------------------------------------- coverage at our sample sizes
def _coverage(draw, interval, truth, n_sim=2000, seed=0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_sim):
        low, high = interval(*draw(rng))[:2]
        hits += low <= truth <= high
    return hits / n_sim


def test_intervals_over_five_models_have_nominal_coverage():
    """Nominal 95 % intervals over n = 5 normal values cover at least 93 % (2,000 simulations, SE 0.5 %)."""
    five = lambda rng: (rng.normal(1.0, 0.5, 5),)  # noqa: E731
    two = lambda rng: (rng.normal(1.0, 0.5, 5), rng.normal(0.4, 1.0, 5))  # noqa: E731
    assert _coverage(five, stats.t_interval, 1.0) >= 0.93
    assert _coverage(five, stats.sd_interval, 0.5) >= 0.93
    assert _coverage(two, stats.welch_interval, 0.6) >= 0.93
    median = lambda x: stats.interval_over_models(x, "median", n_boot=1000)  # noqa: E731
    assert _coverage(five, median, 1.0, n_sim=1000) >= 0.93
    # a difference of medians, from system_contrasts' joint bootstrap
    def contrast(a, b):
        pm = pd.DataFrame({"system": ["A2E"] * 5 + ["A2M2E"] * 5, "seed": list(range(10)),
                           "dmae": np.concatenate([a, b])})
        row = stats.system_contrasts(pm, [("A2E", "A2M2E")], n_boot=1000).iloc[0]
        return row["ci_low"], row["ci_high"]
    assert _coverage(two, contrast, 0.6, n_sim=500) >= 0.93


def test_the_coverage_check_can_fail():
    """A percentile bootstrap of a mean of 5 covers about 84 %: the check above would catch that interval."""
    five = lambda rng: (rng.normal(1.0, 0.5, 5),)  # noqa: E731
    boot_mean = lambda x: stats.bootstrap_ci(x, np.mean, n_boot=1000)  # noqa: E731
    assert _coverage(five, boot_mean, 1.0, n_sim=1000) < 0.90


def test_interval_helpers_edge_cases():
    assert np.isnan(stats.t_interval([1.0])).all() and np.isnan(stats.sd_interval([1.0, np.nan])).all()
    assert stats.t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert stats.welch_interval([1.0, 1.0], [0.0, 0.0]) == (1.0, 1.0, 0.0)
    assert np.isnan(stats.welch_interval([1.0], [0.0, 1.0])).all()
    x = np.array([0.1, 0.4, 0.35, 0.8, 0.5])
    low, high = stats.t_interval(x)
    assert (low, high) == pytest.approx(sps.t.interval(0.95, 4, loc=x.mean(), scale=sps.sem(x)))
    with pytest.raises(MerError, match="stat"):
        stats.interval_over_models(x, "mode")


# --------------------------------------------------------------------------- controls of the head's finishing
def test_findings_across_a_sweep_name_the_setting_that_decides():
    rows = []
    for ridge, a2m2e in ((0.001, 2.0), (0.1, 0.5)):  # A2M2E less robust at one ridge, more at the other
        for k in range(5):
            for system, d in (("A2E", 1.0), ("A2B2E", 1.0), ("aA2E", 0.6), ("aA2B2E", 0.6), ("A2M2E", a2m2e)):
                rows.append({"system": system, "seed": k, "ridge": ridge, "dmae": d + 0.01 * k, "dmae_rel": 5 * d,
                             "clean_r": 0.7 + 0.001 * k, "adv_mae": 0.1 + d + 0.01 * k})
    long = stats.findings_across(pd.DataFrame(rows), "ridge", ("dmae",), n_boot=500)
    assert set(long["ridge"]) == {0.001, 0.1} and long.columns[0] == "ridge"
    wide = stats.verdicts_across(long, "ridge").set_index("measure")
    assert wide.loc["median dMAE: A2E - A2M2E", "across"] == "depends on ridge"
    assert wide.loc["median dMAE: A2E - aA2E", "across"] == "holds"
    assert wide.loc["median dMAE: A2E - A2M2E", "ridge 0.001"].endswith("contradicted")
    assert wide.loc["median dMAE: A2E - A2M2E", "ridge 0.1"].startswith("0.50 [")
    assert wide.loc["median dMAE: A2E - A2M2E", "sign of the estimate"] == "changes with ridge"
    assert wide.loc["median dMAE: A2E - aA2E", "sign of the estimate"] == "positive"


def test_paired_differences_pair_on_the_unit():
    table = pd.DataFrame({"route": ["direct"] * 4 + ["units"] * 4, "seed": [1, 2, 3, 4] * 2,
                          "dmae": [1.0, 2.0, 3.0, 4.0, 0.9, 1.8, 2.9, 3.7]})
    out = stats.paired_differences(table, "route", "direct", "units", ["dmae"]).iloc[0]
    diff = np.array([0.1, 0.2, 0.1, 0.3])
    assert out["estimate"] == pytest.approx(diff.mean()) and out["n_pairs"] == 4
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(stats.t_interval(diff))
    assert out["verdict"] == "holds"  # the unpaired Welch interval of the same values would contain zero
    assert stats.welch_interval(table["dmae"][:4], table["dmae"][4:])[0] < 0
    with pytest.raises(MerError, match="repeats"):
        stats.paired_differences(pd.concat([table, table]), "route", "direct", "units", ["dmae"])
