"""The veracity stage of notebook 11: attack, explain, re-insert, on tiny trained models; and its summaries."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from fakes import fake_prepared

from mer_lib.analysis import veracity
from mer_lib.attacks.waveform_stage import WaveformConfig
from mer_lib.config import AttackConfig, get_profile
from mer_lib.data.stage import prepare_data
from mer_lib.errors import MerError
from mer_lib.models.stage import train_system

pytestmark = pytest.mark.usefixtures("one_thread")

ATTACK = AttackConfig(lr=0.05, max_iters=3)
#: k = 20 re-inserts every segment: the adversarial input itself, so every ranking must recover exactly 1.
CONFIG = veracity.ExplainConfig(n_samples=16, ig_steps=4, n_excerpts=3, ks=(1, 20), n_random=2, waveform_snr_db=None)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("veracity")
    prepared = fake_prepared(tmp)
    smoke = get_profile("smoke")
    profile = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, max_epochs=1, batch_size=4))
    models = {(s, 3): train_system(prepared, s, 3, profile, tmp / "run", device="cpu", progress=False)
              for s in ("A2E", "A2M2E")}
    folders = veracity.explain_models(models, prepared, tmp / "run", ATTACK, CONFIG, executor=0)
    return prepared, models, folders, tmp / "run"


def test_every_ranking_is_measured_and_the_whole_perturbation_recovers_everything(stage):
    prepared, _, folders, _ = stage
    rec = veracity.read_results(folders, "recovery")
    rankings = {"A2E": {"oracle", "lime", "integrated_gradients", "random"}}
    rankings["A2M2E"] = rankings["A2E"] | {veracity.UNITS}
    for system, names in rankings.items():
        mine = rec[rec["system"] == system]
        assert set(mine["ranking"]) == names and len(mine) == len(names) * 2 * 3
        assert set(mine["number"]) == set(veracity.chosen_excerpts(prepared.numbers("test"), 3))
    assert (rec.groupby("system")["damage"].max() > 0).all()  # the attack raised some excerpts' errors
    assert rec["recovery"].isna().eq(rec["damage"] <= 0).all()  # nothing to recover where it did not
    damaged = rec[rec["damage"] > 0]
    assert damaged.query("k == 20")["recovery"].to_numpy() == pytest.approx(1.0, abs=1e-6)
    assert not np.allclose(damaged.query("k == 1")["recovery"], 1.0)


def test_the_bottleneck_models_own_explanation(stage):
    _, _, folders, _ = stage
    units = veracity.read_results({k: v for k, v in folders.items() if k[0] == "A2M2E"}, "units")
    assert len(units) == 3 * 7 and units.groupby("number")["most_consequential"].sum().eq(1).all()
    assert units["move_points"].abs().max() > 0
    assert (np.sign(units["move_points"]) == np.sign(units["move_in_spread"])).all()
    assert veracity.read_results({k: v for k, v in folders.items() if k[0] == "A2E"}, "units").empty
    numbers, rankings, scores, adversarial = veracity.read_scores(folders["A2M2E", 3])
    assert rankings[0] == "oracle" and scores.shape == (len(rankings), 3, 20) and adversarial.shape[0] == 3


def test_a_rerun_reuses_and_other_settings_get_another_folder(stage):
    prepared, models, folders, run = stage
    before = {k: (f / "recovery.csv").read_bytes() for k, f in folders.items()}
    again = veracity.explain_models(models, prepared, run, ATTACK, CONFIG, executor=0)
    assert again == folders and {k: (f / "recovery.csv").read_bytes() for k, f in again.items()} == before
    other = veracity.explain_model(models["A2E", 3], prepared, run, ATTACK, dataclasses.replace(CONFIG, seed=5))
    assert other != folders["A2E", 3] and other.parent == folders["A2E", 3].parent


def test_chosen_excerpts_and_settings():
    assert veracity.chosen_excerpts(np.arange(10, 20), 4).tolist() == [10, 13, 16, 19]
    with pytest.raises(MerError, match="asked for"):
        veracity.chosen_excerpts(np.arange(3), 4)
    for bad in ({"methods": ("saliency",)}, {"n_samples": 0}, {"ks": (0,)}, {"ks": (21,)}):
        with pytest.raises(MerError):
            veracity.ExplainConfig(**bad)
    assert veracity.explain_config(get_profile("paper")).n_samples == 8192
    assert veracity.explain_config(get_profile("quick")) == veracity.ExplainConfig()
    with pytest.raises(MerError):
        veracity.ExplainConfig(waveform_snr_db=float("nan"))


def _table(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """Recoveries of 2 excerpts per model, whose mean per model is the given value."""
    rows = [{"attack": "spectrogram", "system": s, "seed": seed, "ranking": r, "k": 3, "number": n, "recovery": v + d,
             "damage": 0.2}
            for (s, r), vs in values.items() for seed, v in enumerate(vs) for n, d in ((1, -0.05), (2, 0.05))]
    return pd.DataFrame(rows)


def test_summaries_average_excerpts_first_and_pair_models():
    rec = _table({("A", "lime"): [0.5, 0.6, 0.7], ("A", "random"): [0.2, 0.3, 0.4], ("B", "lime"): [0.1, 0.1, 0.4]})
    summary = veracity.recovery_summary(rec).set_index(["system", "ranking"])
    assert summary.loc[("A", "lime"), "recovery"] == pytest.approx(0.6) and summary.loc[("A", "lime"), "n_models"] == 3
    paired = veracity.ranking_contrasts(rec.query("system == 'A'"), "lime", "random").iloc[0]
    assert paired["estimate"] == pytest.approx(0.3) and paired["ci_low"] == pytest.approx(0.3)  # constant difference
    assert paired["verdict"] == "holds"
    cross = veracity.cross_contrast(rec, ("A", "lime"), ("B", "lime")).iloc[0]
    assert cross["estimate"] == pytest.approx(0.4) and cross["ci_low"] < 0.4 < cross["ci_high"]
    with pytest.raises(MerError, match="rankings"):
        veracity.ranking_contrasts(rec, "lime", "oracle")


def test_a_models_recovery_is_the_share_of_its_summed_damage():
    """An excerpt with a small damage and a wild ratio counts by its damage, not as one of n excerpts."""
    rec = pd.DataFrame({"attack": "waveform", "system": "A", "seed": 1, "ranking": "oracle", "k": 3,
                        "number": [1, 2, 3], "recovery": [0.3, 0.3, -3.4], "damage": [0.2, 0.2, 0.01]})
    value = veracity.per_model_recovery(rec)["recovery"].item()
    assert value == pytest.approx((0.3 * 0.4 - 3.4 * 0.01) / 0.41)  # the partial damages summed, over the damage
    assert value > 0 > rec["recovery"].mean()
    with_nan = pd.concat([rec, rec.iloc[:1].assign(number=4, recovery=np.nan, damage=0.0)])
    assert veracity.per_model_recovery(with_nan)["recovery"].item() == pytest.approx(value)


def test_the_waveform_attacks_effect_is_explained_on_the_spectrogram(tmp_path):
    """On rendered audio: both attacks are measured, and re-inserting every segment of the waveform attack's
    spectrogram-domain effect recovers its damage exactly."""
    smoke = get_profile("smoke")
    profile = dataclasses.replace(smoke, data=dataclasses.replace(smoke.data, n_excerpts=12, duration_s=12.0),
                                  train=dataclasses.replace(smoke.train, max_epochs=1, batch_size=4))
    prepared = prepare_data(profile, tmp_path / "run", progress=False)
    folder = train_system(prepared, "A2M2E", 1, profile, tmp_path / "run", device="cpu", progress=False)
    config = dataclasses.replace(CONFIG, n_excerpts=1, waveform_snr_db=10.0)
    out = veracity.explain_model(folder, prepared, tmp_path / "run", ATTACK, config, "cpu",
                                 WaveformConfig(steps=6))
    rec = veracity.read_results({("A2M2E", 1): out}, "recovery")
    assert set(rec["attack"]) == {"spectrogram", "waveform"}
    wave = rec[(rec["attack"] == "waveform") & (rec["damage"] > 0)]
    assert len(wave) and wave.query("k == 20")["recovery"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    units = veracity.read_results({("A2M2E", 1): out}, "units")
    assert set(units["attack"]) == {"spectrogram", "waveform"}
    assert set(veracity.read_results({("A2M2E", 1): out}, "stability")["attack"]) == {"spectrogram"}


@pytest.mark.slow
def test_worker_processes_give_the_in_process_results(stage, tmp_path):
    prepared, models, folders, run = stage
    pooled = veracity.explain_models(models, prepared, tmp_path / "pooled", ATTACK, CONFIG, executor="local:2")
    for key, folder in pooled.items():
        twin = run / folder.relative_to(tmp_path / "pooled")
        assert twin == folders[key]
        for name in ("recovery.csv", "units.csv", "stability.csv", "scores.npy"):
            assert (folder / name).read_bytes() == (twin / name).read_bytes()
