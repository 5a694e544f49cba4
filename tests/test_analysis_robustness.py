"""Robustness in the audio domain: curves with CIs over seeds, the sanity checks and the two domains' rankings."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from mer_lib.analysis import robustness as rb
from mer_lib.analysis.stats import system_contrasts
from mer_lib.errors import MerError

SNRS = (40.0, 30.0, 20.0)
SEEDS = (1, 2, 3, 4)
#: Damage per unit of budget (the attack) of each system.
SLOPE = {"A2E": 0.04, "A2M2E": 0.02}
N_BOOT = 2000


def results_table(slope: dict | None = None, dip: tuple | None = None) -> pd.DataFrame:
    """Synthetic waveform results: the attack's damage grows as the SNR falls, noise does a tenth of it.

    ``dip = (system, snr)`` makes that system's attack weaker at that SNR than at the SNR above it.
    """
    slope = slope or SLOPE
    rng = np.random.default_rng(0)
    rows = []
    for system, seed, number, kind, snr in itertools.product(slope, SEEDS, (1, 2, 3), ("attack", "white", "pink"),
                                                             SNRS):
        budget = (50.0 - snr) / 10.0
        damage = slope[system] * budget * (1.0 + 0.1 * seed) + 0.002 * rng.standard_normal()
        if dip == (system, snr) and kind == "attack":
            damage = slope[system] * 0.5 * (1.0 + 0.1 * seed)
        if kind != "attack":
            damage *= 0.1 if kind == "white" else 0.05
        rows.append({"system": system, "seed": seed, "number": number, "kind": kind, "snr_db": snr,
                     "dmae": damage, "pred_change": abs(damage) + 0.001, "achieved_snr_db": snr + 0.001,
                     "linf": 100.0, "loudness_lu": -snr})
    return pd.DataFrame(rows)


def transfer_table(masking: str | None = None) -> pd.DataFrame:
    """White-box damage 0.3, transferred 0.1; ``masking``: that target suffers 0.5 from the other system."""
    rows = []
    for src, tgt, seed, number in itertools.product(SLOPE, SLOPE, SEEDS, (1, 2)):
        dmae = 0.3 if src == tgt else (0.5 if tgt == masking else 0.1)
        rows.append({"source_system": src, "source_seed": seed, "target_system": tgt, "target_seed": seed,
                     "number": number, "snr_db": 30.0, "dmae": dmae + 0.01 * seed, "pred_change": dmae})
    return pd.DataFrame(rows)


def test_per_model_curves_average_the_excerpts():
    res = results_table()
    pm = rb.per_model_curves(res)
    assert len(pm) == 2 * len(SEEDS) * 3 * len(SNRS) and (pm["n_excerpts"] == 3).all()
    assert list(pm["system"].unique()) == ["A2E", "A2M2E"] and list(pm["snr_db"][:3]) == [40.0, 30.0, 20.0]
    one = res[(res["system"] == "A2E") & (res["seed"] == 2) & (res["kind"] == "attack") & (res["snr_db"] == 30.0)]
    row = pm[(pm["system"] == "A2E") & (pm["seed"] == 2) & (pm["kind"] == "attack") & (pm["snr_db"] == 30.0)]
    assert row["dmae"].item() == pytest.approx(one["dmae"].mean())
    assert row["loudness_lu"].item() == -30.0
    with pytest.raises(MerError, match="appears more than once"):
        rb.per_model_curves(pd.concat([res, res.iloc[:1]]))
    with pytest.raises(MerError, match="dmae"):
        rb.per_model_curves(res.drop(columns="dmae"))


def test_robustness_curves_have_cis_over_seeds():
    curves = rb.robustness_curves(results_table(), n_boot=N_BOOT)
    assert len(curves) == 2 * 3 * len(SNRS) and (curves["n_models"] == len(SEEDS)).all()
    assert (curves["ci_low"] <= curves["estimate"]).all() and (curves["estimate"] <= curves["ci_high"]).all()
    attack = curves[curves["kind"] == "attack"].set_index(["system", "snr_db"])["estimate"]
    assert attack[("A2E", 20.0)] > attack[("A2E", 40.0)] and attack[("A2E", 20.0)] > attack[("A2M2E", 20.0)]
    pm = rb.per_model_curves(results_table())
    one = pm[pm["seed"] == 1]
    single = rb.robustness_curves(one, n_boot=N_BOOT)
    assert single["ci_low"].isna().all() and (single["n_models"] == 1).all()
    assert rb.robustness_curves(pm, stat="mean", n_boot=N_BOOT)["estimate"].notna().all()
    with pytest.raises(MerError, match="stat must be one of"):
        rb.robustness_curves(pm, stat="mode")


def test_monotonicity_holds_for_growing_damage_and_catches_a_dip():
    good = rb.monotonicity(results_table(), n_boot=N_BOOT)
    assert len(good) == 2 * (len(SNRS) - 1)
    assert list(good[["snr_from", "snr_to"]].iloc[0]) == [40.0, 30.0]
    assert (good["verdict"] == "holds").all() and good["increases"].all()
    assert (good["models_increasing"] == len(SEEDS)).all()
    bad = rb.monotonicity(results_table(dip=("A2M2E", 20.0)), n_boot=N_BOOT)
    step = bad[(bad["system"] == "A2M2E") & (bad["snr_to"] == 20.0)].iloc[0]
    assert step["verdict"] == "contradicted" and not step["increases"] and step["models_increasing"] == 0
    assert bad[bad["system"] == "A2E"]["increases"].all()
    assert (rb.monotonicity(results_table(), kind="white", n_boot=N_BOOT)["verdict"] == "holds").all()
    with pytest.raises(MerError, match="no rows of kind 'brown'"):
        rb.monotonicity(results_table(), kind="brown")


def test_attack_vs_noise_difference_and_ratio():
    table = rb.attack_vs_noise(results_table(), noise="white", n_boot=N_BOOT)
    assert len(table) == 2 * len(SNRS) and (table["noise"] == "white").all()
    assert (table["verdict"] == "holds").all()
    np.testing.assert_allclose(table["estimate"], table["attack"] - table["noise_value"], atol=1e-12)
    assert (table["ratio_ci_low"] <= table["ratio"]).all() and (table["ratio"] <= table["ratio_ci_high"]).all()
    assert table["ratio"].between(3.0, 11.0).all()  # pred_change of noise: a tenth of the attack's (plus 0.001)
    swapped = results_table()
    swapped["kind"] = swapped["kind"].map({"attack": "white", "white": "attack", "pink": "pink"})
    assert (rb.attack_vs_noise(swapped, n_boot=N_BOOT)["verdict"] == "contradicted").all()
    with pytest.raises(MerError, match="no rows of kind 'brown'"):
        rb.attack_vs_noise(results_table(), noise="brown")


def test_transfer_summary_and_matrix():
    summary = rb.transfer_summary(transfer_table(), n_boot=N_BOOT)
    assert len(summary) == 4 and summary["white_box"].sum() == 2
    matrix = rb.transfer_matrix(summary)
    assert list(matrix.index) == list(matrix.columns) == ["A2E", "A2M2E"]
    assert matrix.loc["A2E", "A2E"] == pytest.approx(0.325) and matrix.loc["A2E", "A2M2E"] == pytest.approx(0.125)
    several = pd.concat([transfer_table(), transfer_table().assign(snr_db=20.0)])
    with pytest.raises(MerError, match="several SNRs"):
        rb.transfer_summary(several)
    assert len(rb.transfer_summary(several, snr_db=20.0, n_boot=N_BOOT)) == 4
    with pytest.raises(MerError, match="no rows at snr_db 10"):
        rb.transfer_summary(several, snr_db=10.0)


def test_gradient_masking_check_flags_a_system_hurt_more_by_transfer():
    clean = rb.gradient_masking_check(transfer_table(), n_boot=N_BOOT)
    assert list(clean["target_system"]) == ["A2E", "A2M2E"]
    assert (clean["verdict"] == "holds").all() and not clean["masking_suspected"].any()
    masked = rb.gradient_masking_check(transfer_table(masking="A2M2E"), n_boot=N_BOOT).set_index("target_system")
    assert masked.loc["A2M2E", "masking_suspected"] and masked.loc["A2M2E", "verdict"] == "contradicted"
    assert masked.loc["A2M2E", "best_source"] == "A2E" and masked.loc["A2M2E", "transferred"] > 0.5
    assert not masked.loc["A2E", "masking_suspected"]


def test_domain_ranking_and_contrasts():
    pm = rb.per_model_curves(results_table())
    wave = pm[(pm["kind"] == "attack") & (pm["snr_db"] == 20.0)][["system", "seed", "dmae"]]
    same = wave.assign(dmae=wave["dmae"] * 3.0)
    ranking = rb.domain_ranking(wave, same)
    assert list(ranking["system"]) == ["A2E", "A2M2E"] and list(ranking["waveform_rank"]) == [2, 1]
    agreement = rb.ranking_agreement(ranking)
    assert agreement["same_order"] and agreement["kendall_tau"] == pytest.approx(1.0)
    flipped = wave.assign(dmae=np.where(wave["system"] == "A2E", 0.01, 0.5))
    other = rb.domain_ranking(wave, flipped)
    assert list(other["rank_change"]) == [1, -1]
    assert not rb.ranking_agreement(other)["same_order"] and rb.ranking_agreement(other)["kendall_tau"] == -1.0
    with pytest.raises(MerError, match="appears more than once"):
        rb.domain_ranking(pm[pm["kind"] == "attack"], same)
    contrasts = rb.domain_contrasts(wave, same, pairs=[("A2E", "A2M2E")], n_boot=N_BOOT)
    assert list(contrasts["domain"]) == ["waveform", "spectrogram"]
    direct = system_contrasts(wave, [("A2E", "A2M2E")], n_boot=N_BOOT)
    assert contrasts["estimate"].iloc[0] == pytest.approx(direct["estimate"].iloc[0])
    assert contrasts["estimate"].iloc[1] == pytest.approx(3.0 * direct["estimate"].iloc[0])
    assert (contrasts["verdict"] == "holds").all()


def test_snr_table_has_one_column_per_snr_for_the_regression_check():
    pm = rb.per_model_curves(results_table())
    wide = rb.snr_table(pm)
    assert list(wide.columns) == ["system", "seed", "dmae_40dB", "dmae_30dB", "dmae_20dB"]
    assert len(wide) == 2 * len(SEEDS) and list(wide["system"].unique()) == ["A2E", "A2M2E"]
    one = pm[(pm["system"] == "A2M2E") & (pm["seed"] == 3) & (pm["kind"] == "attack") & (pm["snr_db"] == 20.0)]
    assert wide.loc[(wide["system"] == "A2M2E") & (wide["seed"] == 3), "dmae_20dB"].item() == one["dmae"].item()
    with pytest.raises(MerError, match="no rows of kind 'gaussian'"):
        rb.snr_table(pm, kind="gaussian")


def test_roundtrip_summary_per_system():
    rows = [{"system": s, "seed": k, "number": n, "snr_db": 30.0, "dmae_attack": 0.2, "dmae_roundtrip": 0.2 * f,
             "survival": f, "peak_preserved": n == 1, "max_error_int16": 0.5 * n}
            for s, f in (("A2M2E", 0.9), ("A2E", 1.0)) for k in (1, 2) for n in (1, 2)]
    out = rb.roundtrip_summary(pd.DataFrame(rows))
    assert list(out["system"]) == ["A2E", "A2M2E"] and list(out["n"]) == [4, 4]
    assert out.set_index("system").loc["A2M2E", "survival"] == pytest.approx(0.9)
    assert (out["peak_preserved"] == 0.5).all() and (out["max_error_int16"] == 1.0).all()
    with pytest.raises(MerError, match="survival"):
        rb.roundtrip_summary(pd.DataFrame(rows).drop(columns="survival"))


# --------------------------------------------------------------------------- budgets at a fixed damage
def test_budget_for_damage_interpolates_in_log_budget():
    sweep = pd.DataFrame({"system": ["A2E"] * 3 + ["A2M2E"] * 3 + ["aA2E"] * 3, "seed": 1,
                          "eps": [0.01, 0.1, 1.0] * 3,
                          "dmae_rel": [0.2, 0.4, 0.8, 0.6, 0.9, 1.2, 0.1, 0.2, 0.3]})
    out = rb.budget_for_damage(sweep, level=0.5).set_index("system")
    # A2E crosses 0.5 a quarter of the way from 0.4 (eps 0.1) to 0.8 (eps 1): 10 ** (-1 + 0.25)
    assert out.loc["A2E", "budget"] == pytest.approx(10 ** -0.75) and out.loc["A2E", "reached"]
    assert out.loc["A2M2E", "budget"] == 0.01 and out.loc["A2M2E", "at_smallest"]  # only an upper bound
    assert not out.loc["A2E", "at_smallest"] and not out.loc["aA2E", "at_smallest"]
    assert np.isinf(out.loc["aA2E", "budget"]) and not out.loc["aA2E", "reached"]
    assert list(out.index) == ["A2E", "aA2E", "A2M2E"]  # the paper's order
    with pytest.raises(MerError, match="level"):
        rb.budget_for_damage(sweep, level=0.0)
    with pytest.raises(MerError):
        rb.budget_for_damage(sweep.drop(columns="dmae_rel"))


def test_plateau_summary_is_the_mean_ratio_with_its_t_interval():
    ratios = np.array([1.0, 1.1, 1.2, 0.9, 1.05])
    plateau = pd.DataFrame({"system": list("ABCDE") * 2, "seed": 1, "norm": ["linf"] * 5 + ["l2"] * 5,
                            "eps": [0.1] * 5 + [20.0] * 5, "dmae_ratio": np.r_[ratios, 2 * ratios],
                            "dmae_rel_ratio": np.r_[ratios, ratios]})
    out = rb.plateau_summary(plateau)
    assert out["norm"].tolist() == ["linf", "l2"] and out["models"].tolist() == [5, 5]
    assert out.loc[0, "dmae_ratio"] == pytest.approx(ratios.mean())
    half = scipy_stats.t.ppf(0.975, 4) * ratios.std(ddof=1) / np.sqrt(5)
    assert out.loc[0, "dmae_ci_low"] == pytest.approx(ratios.mean() - half)
    assert out.loc[1, "dmae_ci_high"] == pytest.approx(2 * ratios.mean() + 2 * half)
    with pytest.raises(MerError, match="plateau_summary"):
        rb.plateau_summary(plateau.drop(columns="dmae_ratio"))
