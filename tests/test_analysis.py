"""The analysis functions against direct scipy/numpy computations, and on the published runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mer_lib import analysis as A
from mer_lib.attack_logs import read_published_runs, tidy_columns
from mer_lib.constants import EMOTIONS, SYSTEMS
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
def test_pearson_per_column_matches_scipy():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    y[:, 3] += 2 * x[:, 3]
    expected = [stats.pearsonr(x[:, j], y[:, j]).statistic for j in range(8)]
    np.testing.assert_allclose(A.pearson_per_column(x, y), expected, rtol=1e-12, atol=1e-14)
    assert A.average_pearson(x, y) == pytest.approx(np.mean(expected), rel=1e-12)


def test_constant_column_is_left_out_of_the_average():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(15, 8)), rng.normal(size=(15, 8))
    x[:, 2] = 0.1  # a constant column whose floating-point mean is not exactly 0.1
    y[:, 5] = 3.0
    r = A.pearson_per_column(x, y)
    assert np.isnan(r[2]) and np.isnan(r[5]) and np.isfinite(np.delete(r, [2, 5])).all()
    expected = np.mean([stats.pearsonr(x[:, j], y[:, j]).statistic for j in range(8) if j not in (2, 5)])
    assert A.average_pearson(x, y) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(A.average_pearson(np.ones((5, 2)), rng.normal(size=(5, 2))))


def test_per_model_metrics_match_direct_computation():
    logs = make_logs(systems=("A2M2E", "A2E"), seeds=(7, 3))
    pm = A.per_model_metrics(logs)
    assert list(zip(pm["system"], pm["seed"])) == [("A2E", 3), ("A2E", 7), ("A2M2E", 3), ("A2M2E", 7)]
    for row in pm.itertuples():
        g = logs[(logs["system"] == row.system) & (logs["seed"] == row.seed)]
        t, o, n = g[TRUE].to_numpy(), g[ORIG].to_numpy(), g[NEW].to_numpy()
        r_clean = np.mean([stats.pearsonr(t[:, j], o[:, j]).statistic for j in range(8)])
        r_adv = np.mean([stats.pearsonr(t[:, j], n[:, j]).statistic for j in range(8)])
        assert row.clean_r == pytest.approx(r_clean, rel=1e-12)
        assert row.adv_r == pytest.approx(r_adv, rel=1e-12)
        assert row.clean_mae == pytest.approx(np.abs(o - t).mean(), rel=1e-12)
        assert row.adv_mae == pytest.approx(np.abs(n - t).mean(), rel=1e-12)
        assert row.dmae == pytest.approx(np.abs(n - t).mean() - np.abs(o - t).mean(), rel=1e-12)
        assert row.n_excerpts == len(g) and row.clean_r_emotions == 8 and row.adv_r_emotions == 8


def test_per_model_metrics_reports_undefined_emotions():
    logs = make_logs(systems=("A2E",), seeds=(1,))
    logs["orig_sad"] = 0.2  # a model predicting a constant for one emotion
    row = A.per_model_metrics(logs).iloc[0]
    assert row["clean_r_emotions"] == 7 and row["adv_r_emotions"] == 8
    t, o = logs[TRUE].to_numpy(), logs[ORIG].to_numpy()
    keep = [j for j, e in enumerate(EMOTIONS) if e != "sad"]
    assert row["clean_r"] == pytest.approx(np.mean([stats.pearsonr(t[:, j], o[:, j]).statistic for j in keep]))
    per_emotion = A.per_emotion_pearson(logs)
    assert np.isnan(per_emotion.loc[0, "sad"]) and per_emotion.loc[0, "valence"] == pytest.approx(
        stats.pearsonr(t[:, 0], o[:, 0]).statistic)


def test_input_errors():
    logs = make_logs()
    with pytest.raises(MerError, match="missing columns"):
        A.per_model_metrics(logs.drop(columns=["new_tender"]))
    with pytest.raises(MerError, match="repeat"):
        A.per_model_metrics(pd.concat([logs, logs.iloc[:1]]))
    with pytest.raises(MerError, match="which"):
        A.per_excerpt_mae(logs, which="adv")
    with pytest.raises(MerError, match="empty"):
        A.per_model_metrics(logs.iloc[:0])


# --------------------------------------------------------------------------- Table 1
def test_table1_mean_and_sample_std_over_seeds():
    logs = make_logs(systems=("A2M2E", "aA2E", "A2E"), seeds=(1, 2, 3, 4))
    pm = A.per_model_metrics(logs)
    t1 = A.table1(logs)
    assert t1["system"].tolist() == ["A2E", "aA2E", "A2M2E"]  # the paper's order
    for row in t1.itertuples():
        g = pm[pm["system"] == row.system]
        assert row.n_seeds == 4
        assert row.r_mean == pytest.approx(g["clean_r"].mean())
        assert row.r_std == pytest.approx(np.std(g["clean_r"].to_numpy(), ddof=1))
        assert row.mae_mean == pytest.approx(g["clean_mae"].mean())
        assert row.mae_std == pytest.approx(np.std(g["clean_mae"].to_numpy(), ddof=1))
    assert t1.iloc[0]["r (mean ± std)"] == f"{t1.iloc[0]['r_mean']:.3f} ± {t1.iloc[0]['r_std']:.3f}"
    pd.testing.assert_frame_equal(A.table1(pm), t1)  # accepts the per-model table too


def test_table1_single_seed_has_no_std():
    t1 = A.table1(make_logs(systems=("A2E",), seeds=(5,)))
    assert np.isnan(t1.loc[0, "r_std"]) and t1.loc[0, "MAE (mean ± std)"].endswith("± n/a")


def test_dmae_summary():
    logs = make_logs(seeds=(1, 2, 3, 4, 5))
    pm = A.per_model_metrics(logs)
    s = A.dmae_summary(pm).set_index("system")
    for system, g in pm.groupby("system"):
        assert s.loc[system, "median"] == pytest.approx(np.median(g["dmae"]))
        assert s.loc[system, "n_models"] == 5 and s.loc[system, "max"] == pytest.approx(g["dmae"].max())


# --------------------------------------------------------------------------- per-excerpt MAE and tests
def test_per_excerpt_mae():
    logs = make_logs()
    for which, cols in (("new", NEW), ("orig", ORIG)):
        pe = A.per_excerpt_mae(logs, which)
        assert len(pe) == len(logs) and list(pe.columns) == ["system", "seed", "number", "mae"]
        merged = pe.merge(logs, on=["system", "seed", "number"])
        expected = np.abs(merged[cols].to_numpy() - merged[TRUE].to_numpy()).mean(axis=1)
        np.testing.assert_allclose(merged["mae"], expected, rtol=1e-12)


def test_paired_ttests_match_scipy_and_formulas():
    logs = make_logs(systems=("A2E", "A2B2E", "A2M2E"), seeds=(1, 2, 3), n=10)
    res = A.paired_ttests(logs, n_boot=2000, seed=3)
    assert res[["a", "b"]].values.tolist() == [["A2E", "A2M2E"], ["A2B2E", "A2M2E"]]
    pe = A.per_excerpt_mae(logs)
    for row in res.itertuples():
        a = pe[pe["system"] == row.a].sort_values(["seed", "number"])["mae"].to_numpy()
        b = pe[pe["system"] == row.b].sort_values(["seed", "number"])["mae"].to_numpy()
        ref = stats.ttest_rel(a, b)
        assert row.n_pairs == 30 and row.df == 29
        assert row.t == pytest.approx(ref.statistic, rel=1e-12)
        assert row.p == pytest.approx(ref.pvalue, rel=1e-10)
        diff = a - b
        assert row.mean_diff == pytest.approx(diff.mean(), rel=1e-12)
        assert row.cohens_d == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-12)
        # for paired samples t = d * sqrt(n)
        assert row.t == pytest.approx(row.cohens_d * np.sqrt(row.n_pairs), rel=1e-10)
        assert row.ci_low < row.mean_diff < row.ci_high
    again = A.paired_ttests(logs, n_boot=2000, seed=3)
    pd.testing.assert_frame_equal(res, again)  # seeded: identical


def test_pairing_errors():
    logs = make_logs(systems=("A2E", "A2M2E"), seeds=(1, 2))
    with pytest.raises(MerError, match="do not align"):  # one excerpt missing
        A.paired_ttests(logs.drop(index=logs.index[-1]), pairs=[("A2E", "A2M2E")], n_boot=10)
    shifted = logs.copy()
    shifted.loc[shifted["system"] == "A2M2E", "seed"] += 10  # different seeds
    with pytest.raises(MerError, match="do not align"):
        A.paired_ttests(shifted, pairs=[("A2E", "A2M2E")], n_boot=10)
    renumbered = logs.copy()
    renumbered.loc[renumbered["system"] == "A2E", "number"] += 1000  # different excerpts
    with pytest.raises(MerError, match="do not align"):
        A.paired_ttests(renumbered, pairs=[("A2E", "A2M2E")], n_boot=10)
    with pytest.raises(MerError, match="no attack logs of system 'A2B2E'"):
        A.paired_ttests(logs, pairs=[("A2B2E", "A2M2E")], n_boot=10)


def test_cohens_d_paired():
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([0.5, 1.0, 3.0, 5.0])
    d = a - b
    assert A.cohens_d_paired(a, b) == pytest.approx(d.mean() / np.sqrt(((d - d.mean()) ** 2).sum() / 3))
    assert np.isnan(A.cohens_d_paired(a, a - 1.0))  # constant differences


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_coverage_on_simulated_data():
    rng = np.random.default_rng(12345)
    true_mean, hits, n_sim = 0.3, 0, 200
    for i in range(n_sim):
        sample = rng.normal(true_mean, 1.0, size=40)
        lo, hi = A.bootstrap_ci(sample, n_boot=400, seed=i, level=0.95)
        hits += lo <= true_mean <= hi
    coverage = hits / n_sim
    assert 0.90 <= coverage <= 0.99, coverage


def test_bootstrap_ci_properties():
    x = np.random.default_rng(0).exponential(size=50)
    lo, hi = A.bootstrap_ci(x, n_boot=1000, seed=1)
    assert lo < x.mean() < hi
    assert A.bootstrap_ci(x, n_boot=1000, seed=1) == (lo, hi)  # deterministic
    # a statistic without an axis argument gives the same interval (same resamples)
    assert A.bootstrap_ci(x, stat=lambda v: float(np.mean(v)), n_boot=1000, seed=1) == pytest.approx((lo, hi))
    lo90, hi90 = A.bootstrap_ci(x, n_boot=1000, seed=1, level=0.9)
    assert lo <= lo90 <= hi90 <= hi
    mlo, mhi = A.bootstrap_ci(x, stat=np.median, n_boot=1000, seed=1)
    assert mlo <= np.median(x) <= mhi
    for bad in ({"values": [1.0]}, {"values": [1.0, np.nan]}, {"values": x, "level": 1.0},
                {"values": x, "n_boot": 0}):
        with pytest.raises(MerError):
            A.bootstrap_ci(**bad)


# --------------------------------------------------------------------------- perturbations
def test_perturbation_stats():
    logs = make_logs(n=20)
    ps = A.perturbation_stats(logs).set_index("system")
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
    ps2 = A.perturbation_stats(with_snr, by=("system", "seed"))
    assert len(ps2) == 6 and "snr_db_median" in ps2.columns
    g = with_snr[(with_snr["system"] == "A2E") & (with_snr["seed"] == 1)]
    assert ps2.iloc[0]["snr_db_median"] == pytest.approx(np.median(g["snr_db"]))


# --------------------------------------------------------------------------- table output
def test_markdown_latex_and_save(tmp_path):
    df = pd.DataFrame({"system": ["A2E", "a|b_c"], "n": [10, 3], "r": [0.12345, np.nan],
                       "txt": ["0.1 ± 0.2", "50%"]})
    md = A.table_to_markdown(df, decimals=2)
    assert md.splitlines() == ["| system | n | r | txt |", "| :--- | ---: | ---: | :--- |",
                               "| A2E | 10 | 0.12 | 0.1 ± 0.2 |", "| a\\|b_c | 3 | n/a | 50% |"]
    tex = A.table_to_latex(df, decimals=2, caption="Clean results", label="tab:clean")
    assert r"\begin{tabular}{lrrl}" in tex and r"a|b\_c & 3 & n/a & 50\% \\" in tex
    assert r"0.1 $\pm$ 0.2" in tex and r"\label{tab:clean}" in tex and tex.count(r"\end{table}") == 1
    paths = A.save_table(df, tmp_path / "sub" / "table1")
    assert sorted(p.name for p in paths.values()) == ["table1.csv", "table1.md", "table1.tex"]
    back = pd.read_csv(paths["csv"])
    assert back["r"].iloc[0] == 0.12345 and paths["md"].read_text(encoding="utf-8") == A.table_to_markdown(df)
    assert not list((tmp_path / "sub").glob(".*tmp"))  # no temporary files left


# --------------------------------------------------------------------------- the published runs
def test_published_runs_table1_dmae_and_ttests(published):
    pm = A.per_model_metrics(published)
    assert len(pm) == 50 and (pm["n_excerpts"] == 36).all() and (pm["clean_r_emotions"] == 8).all()
    t1 = A.table1(pm)
    assert t1["system"].tolist() == list(SYSTEMS) and (t1["n_seeds"] == 10).all()
    assert t1["r_mean"].between(0.6, 0.8).all() and t1["mae_mean"].between(0.08, 0.13).all()
    # the black box is the best model on clean data
    assert t1.set_index("system")["r_mean"].idxmax() == "A2E"
    med = A.dmae_summary(pm).set_index("system")["median"]
    # the paper: A2M2E about as robust as adversarial training (~1.0) vs ~1.6 for A2E / A2B2E
    assert med["A2M2E"] == pytest.approx(1.0, abs=0.1)
    assert med[["aA2E", "aA2B2E"]].between(0.9, 1.1).all()
    assert med[["A2E", "A2B2E"]].between(1.4, 1.7).all()
    tt = A.paired_ttests(published, n_boot=2000)
    assert (tt["n_pairs"] == 360).all() and (tt["df"] == 359).all()
    assert (tt["mean_diff"] > 0).all() and (tt["p"] < 1e-6).all() and (tt["ci_low"] > 0).all()
    ps = A.perturbation_stats(published)
    assert (ps["iterations_median"] == 1000).all() and (ps["converged_share"] == 0).all()


def _per_model(dmae: dict, clean_r: dict, seeds=(1, 2, 3)) -> pd.DataFrame:
    rows = [{"system": s, "seed": k, "dmae": dmae[s] + 0.01 * i, "clean_r": clean_r[s] - 0.01 * i}
            for s in dmae for i, k in enumerate(seeds)]
    return pd.DataFrame(rows)


def test_paper_findings_values_and_rules():
    dmae = {"A2E": 1.6, "aA2E": 1.0, "A2B2E": 1.5, "aA2B2E": 1.0, "A2M2E": 0.9}
    clean = {"A2E": 0.73, "aA2E": 0.68, "A2B2E": 0.70, "aA2B2E": 0.67, "A2M2E": 0.68}
    found = A.paper_findings(_per_model(dmae, clean)).set_index("measure")
    assert found.loc["median dMAE A2E - A2M2E", "value"] == pytest.approx(0.7)
    assert found.loc["median dMAE A2B2E - aA2B2E", "value"] == pytest.approx(0.5)
    closer = "|A2M2E - adv. trained| - |A2M2E - plain black boxes| (median dMAE)"
    assert found.loc[closer, "value"] == pytest.approx(abs(0.9 - 1.0) - abs(0.9 - 1.55))
    assert found.loc["mean clean r: A2E - best other system", "value"] == pytest.approx(0.03)
    assert found["holds"].tolist() == [True] * len(found)
    # the same rules fail when the interpretable model is the least robust and the best model
    dmae["A2M2E"], clean["A2M2E"] = 2.0, 0.80
    flipped = A.paper_findings(_per_model(dmae, clean)).set_index("measure")["holds"]
    assert not flipped["median dMAE A2E - A2M2E"] and not flipped["mean clean r: A2E - A2M2E"]
    assert not flipped["mean clean r: A2E - best other system"] and not flipped[closer]
    assert flipped["median dMAE A2E - aA2E"]


def test_paper_findings_with_tests_and_missing_systems():
    logs = make_logs(systems=("A2E", "A2B2E", "A2M2E"), seeds=(1, 2))
    tests = A.paired_ttests(logs, n_boot=100)
    found = A.paper_findings(A.per_model_metrics(logs), tests)
    ttest_rows = found[found["finding"].str.startswith("per-excerpt MAE")]
    assert len(ttest_rows) == 2
    for rec, t in zip(ttest_rows.to_dict("records"), tests.to_dict("records")):
        assert rec["value"] == pytest.approx(t["mean_diff"])
        assert rec["holds"] == (t["mean_diff"] > 0 and t["p"] < 0.05)
    # no adversarially trained systems: those findings are undecided, not False
    adv = found[found["measure"].str.contains("aA2")]
    assert adv["holds"].isna().all() and adv["value"].isna().all()


def test_paper_findings_hold_on_the_published_runs(published):
    found = A.paper_findings(A.per_model_metrics(published), A.paired_ttests(published, n_boot=200))
    assert len(found) == 10 and found["holds"].all()
