"""The waveform-attack stage: tidy tables, transfer, round trip, listening examples, reuse, repair, settings."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mer_lib import artifacts
from mer_lib.attacks import waveform_stage as ws
from mer_lib.attacks.logs import bottleneck_columns, tidy_columns
from mer_lib.config import get_profile
from mer_lib.data.stage import prepare_data
from mer_lib.errors import MerError
from mer_lib.models.stage import train_system

SMOKE = get_profile("smoke")
TINY = dataclasses.replace(SMOKE, data=dataclasses.replace(SMOKE.data, n_excerpts=8),
                           train=dataclasses.replace(SMOKE.train, max_epochs=1, batch_size=4, channels_last=False))
#: Small and fast: 2 excerpts of the train split (its short, wrap-padded files are skipped), one at a time.
CONFIG = ws.WaveformConfig(snr_db=(40.0, 20.0), steps=2, n_excerpts=2, split="train", batch_size=1,
                           transfer_snr_db=20.0, roundtrip_snr_db=20.0, listening_snr_db=20.0)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    run = tmp_path_factory.mktemp("waveform_stage") / "run"
    prepared = prepare_data(TINY, run, progress=False)
    models = {(s, k): train_system(prepared, s, k, TINY, run, device="cpu", progress=False)
              for s in ("A2E", "A2M2E") for k in (1, 2)}
    tables = ws.waveform_many(models, prepared, run, CONFIG, executor=0, progress=False)
    return run, prepared, models, tables


def test_select_excerpts_skips_wrap_padded_files(study):
    _, prepared, _, _ = study
    chosen, skipped = ws.select_excerpts(prepared, None, "train")
    frames = prepared.table["frames"]
    assert skipped and all(frames[n] < 313 for n in skipped) and all(frames[n] >= 313 for n in chosen)
    order = list(prepared.numbers("train"))
    assert chosen == [n for n in order if n in chosen] and set(chosen + skipped) == set(order)
    assert ws.select_excerpts(prepared, 1, "train")[0] == chosen[:1]
    short = dataclasses.replace(prepared, table=prepared.table.assign(frames=100))
    with pytest.raises(MerError, match="no train excerpt is long enough.*padded by wrapping"):
        ws.select_excerpts(short, None, "train")


def test_results_are_tidy_and_in_budget(study):
    run, prepared, models, tables = study
    res = tables.results
    chosen = ws.select_excerpts(prepared, CONFIG.n_excerpts, "train")[0]
    assert len(res) == len(models) * len(chosen) * len(CONFIG.snr_db) * 3
    assert set(res["kind"]) == {"attack", "white", "pink"} and set(res["number"]) == set(chosen)
    for col in ("system", "seed", "snr_db", "achieved_snr_db", "linf", "loudness_lu", "mae_clean", "mae_adv",
                "dmae", "pred_change", "best_step", "result_dir", *tidy_columns("true"), *tidy_columns("new")):
        assert col in res, col
    np.testing.assert_allclose(res["dmae"], res["mae_adv"] - res["mae_clean"], atol=1e-12)
    attack = res[res["kind"] == "attack"]
    assert (attack["achieved_snr_db"] >= attack["snr_db"] - 1e-3).all() and (attack["best_step"] >= 0).all()
    assert (res.loc[res["kind"] != "attack", "best_step"] == -1).all()
    noise = res[res["kind"] != "attack"]
    assert (noise["achieved_snr_db"] - noise["snr_db"]).abs().max() < 0.1
    a2m2e = res["system"] == "A2M2E"
    assert res.loc[a2m2e, bottleneck_columns("new")].notna().all().all()
    assert res.loc[~a2m2e, bottleneck_columns("new")].isna().all().all()
    # the attack beats noise of the same SNR on every model
    per_model = res.groupby(["system", "seed", "kind", "snr_db"])["dmae"].mean().unstack("kind")
    assert (per_model["attack"] > per_model[["white", "pink"]].max(axis=1)).all()
    folder = Path(res["result_dir"].iloc[0])
    assert folder.parent.parent == run / "attacks" / "waveform" and folder.name.startswith("seed")
    summary = artifacts.read_json(folder / "summary.json")
    assert summary["numbers"] == chosen and summary["skipped_wrapped"]
    # the attack's passes: steps + 1 per SNR and excerpt, plus the clean pass of each warm-started SNR
    assert summary["forward_passes"] == len(chosen) * (2 * (CONFIG.steps + 1) + 1)
    assert summary["backward_passes"] == len(chosen) * 2 * CONFIG.steps


def test_transfer_rows_pair_each_model_with_its_seeds_other_systems(study):
    _, _, models, tables = study
    t, res = tables.transfer, tables.results
    assert len(t) == len(models) * 2 * 2  # every model: itself and the other system of its seed, 2 excerpts
    assert (t["source_seed"] == t["target_seed"]).all() and (t["snr_db"] == 20.0).all()
    own = t[t["source_system"] == t["target_system"]].merge(
        res[(res["kind"] == "attack") & (res["snr_db"] == 20.0)], left_on=["source_system", "source_seed", "number"],
        right_on=["system", "seed", "number"], suffixes=("", "_attack"))
    np.testing.assert_allclose(own["dmae"], own["dmae_attack"])
    assert len(own) == len(models) * 2


def test_the_round_trip_keeps_the_damage(study):
    _, _, models, tables = study
    rt = tables.roundtrip
    assert len(rt) == len(models) * 2 and (rt["snr_db"] == 20.0).all()
    assert rt["dmae_attack"].gt(0).all()
    np.testing.assert_allclose(rt["dmae_roundtrip"], rt["dmae_attack"], rtol=0.1, atol=0.01)
    np.testing.assert_allclose(rt["survival"], rt["dmae_roundtrip"] / rt["dmae_attack"])
    assert (rt["max_error_int16"] >= 0).all()


def test_listening_examples_of_every_systems_first_seed(study):
    _, _, _, tables = study
    lis = tables.listening
    assert sorted(set(zip(lis["system"], lis["seed"]))) == [("A2E", 1), ("A2M2E", 1)]
    assert list(lis["role"][:3]) == ["clean", "adversarial", "perturbation"]
    for path, role, gain in zip(lis["file"], lis["role"], lis["gain_db"]):
        info = sf.info(path)
        assert info.subtype == "PCM_16" and info.samplerate == 22050 and info.frames > 10 * 22050
        data = sf.read(path)[0]
        if role == "perturbation":
            assert "amplified" in Path(path).name and gain > 0
            assert np.abs(data).max() == pytest.approx(ws.LISTENING_PEAK, abs=1e-3)
    assert lis["label"].str.contains("amplified").sum() == 2


def test_listening_spectrograms_are_what_the_files_give_the_model(study):
    _, prepared, _, tables = study
    clean, adversarial = ws.listening_spectrograms(tables.listening, prepared, "A2M2E")
    assert clean.shape == adversarial.shape and clean.shape[1] == 149 and clean.shape[0] >= 313
    assert not np.array_equal(clean, adversarial)
    # standardised with the run's statistics: the clean file is the excerpt's own audio
    number = int(tables.listening.loc[tables.listening["system"] == "A2M2E", "number"].iloc[0])
    cached = prepared.excerpts([number])[0, 0]
    assert abs(float(clean.mean()) - float(cached.mean())) < 0.1
    with pytest.raises(MerError, match="no clean and adversarial file of A2B2E"):
        ws.listening_spectrograms(tables.listening, prepared, "A2B2E")


def test_waveform_config_of_the_profiles():
    assert ws.waveform_config(get_profile("quick")) == ws.WaveformConfig()
    assert ws.waveform_config(get_profile("smoke")) == ws.WaveformConfig()
    for name in ("paper", "paper-synthetic"):
        full = ws.waveform_config(get_profile(name))
        assert full is ws.FULL_SIZE_WAVEFORM and full.n_excerpts is None and 60.0 in full.snr_db


def test_a_rerun_reuses_everything_and_a_damaged_result_is_recomputed_identically(study, monkeypatch):
    run, prepared, models, tables = study
    monkeypatch.setattr(ws, "waveform_attack", lambda *a, **k: pytest.fail("attacked again"))
    again = ws.waveform_many(models, prepared, run, dataclasses.replace(CONFIG, batch_size=2), executor=0,
                             progress=False)  # batch size: not part of the result
    pd.testing.assert_frame_equal(again.results, tables.results)
    monkeypatch.undo()
    folder = Path(tables.results["result_dir"].iloc[0])
    good = (folder / "results.csv").read_bytes()
    (folder / "results.csv").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match=rf"{folder / 'results.csv'}: damaged.*recomputing the waveform attack"):
        repaired = ws.waveform_many(models, prepared, run, CONFIG, executor=0, progress=False)
    assert (folder / "results.csv").read_bytes() == good  # deterministic: the same bytes again
    pd.testing.assert_frame_equal(repaired.results, tables.results)
    with pytest.raises(MerError, match="no finished result"):
        ws.read_waveform_tables([run])


def test_settings_that_change_results_change_the_folder(study):
    run, prepared, models, tables = study
    folder = ws.attack_waveform_model(models[("A2E", 2)], prepared, run, CONFIG, peers=[models[("A2M2E", 2)]])
    assert str(folder) == tables.results.query("system == 'A2E' and seed == 2")["result_dir"].iloc[0]
    with_listening = ws.attack_waveform_model(models[("A2E", 2)], prepared, run, CONFIG,
                                              peers=[models[("A2M2E", 2)]], listening=True)
    assert with_listening != folder and len(list((with_listening / "listening").glob("*.wav"))) == 3
    other = dataclasses.replace(CONFIG, snr_db=(20.0,), steps=1, noise_kinds=(), transfer_snr_db=None,
                                roundtrip_snr_db=None, listening_snr_db=None, n_excerpts=1)
    lone = ws.attack_waveform_model(models[("A2E", 2)], prepared, run, other)
    assert lone != folder and lone.parent == folder.parent
    tables = ws.read_waveform_tables([lone])
    assert set(tables.results["kind"]) == {"attack"} and tables.transfer.empty and tables.roundtrip.empty
    assert set(artifacts.read_json(lone / "checksums.json")) == set(ws.RESULT_FILES)


@pytest.mark.parametrize("change, message", [
    ({"snr_db": ()}, "distinct SNRs"), ({"snr_db": (30.0, 30.0)}, "distinct"), ({"snr_db": (float("inf"),)}, "finite"),
    ({"snr_db": 30.0}, "distinct SNRs"), ({"noise_kinds": "white"}, "noise_kinds must be a tuple"),
    ({"steps": 0}, "steps must be a positive integer"), ({"update": "adam"}, "update must be one of"),
    ({"n_excerpts": 0}, "n_excerpts"), ({"noise_kinds": ("brown",)}, "noise_kinds"), ({"fft_dtype": "half"}, "fft"),
    ({"transfer_snr_db": 10.0}, "transfer_snr_db must be one of snr_db"), ({"linf": -3.0}, "linf"),
    ({"step_scale": 0.0}, "step_scale"), ({"noise_seed": -1}, "noise_seed"), ({"noise_seed": True}, "noise_seed"),
    ({"warm_start": 1}, "warm_start")])
def test_invalid_settings_are_refused(change, message):
    with pytest.raises(MerError, match=message):
        dataclasses.replace(CONFIG, **change)


def test_lists_are_kept_as_tuples_and_batch_size_is_not_hashed():
    config = dataclasses.replace(CONFIG, snr_db=[40.0, 20.0], noise_kinds=["white"])
    assert config.snr_db == (40.0, 20.0) and config.noise_kinds == ("white",)
    assert dataclasses.replace(CONFIG, batch_size=5).settings() == CONFIG.settings()
    assert dataclasses.replace(CONFIG, steps=3).settings() != CONFIG.settings()


@pytest.mark.slow
def test_worker_processes_give_the_in_process_results(study, tmp_path):
    run, prepared, models, tables = study
    pair = {key: models[key] for key in (("A2E", 1), ("A2M2E", 1))}
    pooled = ws.waveform_many(pair, prepared, tmp_path / "pooled", CONFIG, executor="local:2", progress=False)
    for folder in pooled.results["result_dir"].unique():
        twin = run / Path(folder).relative_to(tmp_path / "pooled")
        for name in ("results.csv", "transfer.csv", "roundtrip.csv"):
            assert (Path(folder) / name).read_bytes() == (twin / name).read_bytes()
    with pytest.raises(MerError, match="no models"):
        ws.waveform_many({}, prepared, run, CONFIG)
    with pytest.raises(MerError, match="appears more than once"):
        ws.waveform_many([models[("A2E", 1)]] * 2, prepared, run, CONFIG, executor=0, progress=False)
