"""Measures of the mechanism world on constructed inputs whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from mer_lib.analysis import mechanism
from mer_lib.errors import MerError


def test_the_cue_bands_are_the_bands_centred_in_its_band():
    centres = mechanism.band_centres()
    assert len(centres) == 149 and np.all(np.diff(centres) > 0)
    mask = mechanism.cue_band_mask((7500.0, 8500.0))
    assert mask.sum() >= 2 and np.all(np.diff(np.flatnonzero(mask)) == 1)  # one contiguous run of bands
    assert centres[mask].min() >= 7500 and centres[mask].max() <= 8500
    below, above = np.flatnonzero(mask)[0] - 1, np.flatnonzero(mask)[-1] + 1
    assert centres[below] < 7500 and centres[above] > 8500
    assert mechanism.band_area_share(mask) == pytest.approx(mask.sum() / 149)
    with pytest.raises(MerError, match="no band"):
        mechanism.cue_band_mask((8000.0, 8001.0))


def test_band_energy_share_of_constructed_perturbations():
    mask = np.zeros(10, bool)
    mask[[3, 4]] = True
    inside = np.zeros((1, 1, 6, 10))
    inside[..., 3:5] = np.random.default_rng(0).standard_normal((1, 1, 6, 2))
    even = np.ones((1, 1, 6, 10))
    half = np.ones((1, 1, 6, 10))
    half[..., 3:5] = 2.0  # 4 times the energy per bin in 2 of 10 bins: 8 / (8 + 8)
    zero = np.zeros((1, 1, 6, 10))
    share = mechanism.band_energy_share(np.concatenate([inside, even, half, zero]), mask)
    np.testing.assert_allclose(share[:3], [1.0, 0.2, 0.5])
    assert np.isnan(share[3])
    with pytest.raises(MerError, match=r"\(N, ..., 10\) expected, got \(2, 9\)"):
        mechanism.band_energy_share(np.ones((2, 9)), mask)


def test_the_probe_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(1)
    target = rng.standard_normal(400)
    noise = rng.standard_normal((400, 6))
    carrying = np.c_[noise, 0.5 * target + 0.1 * rng.standard_normal(400)]
    assert mechanism.probe_r(carrying, target) > 0.95
    assert abs(mechanism.probe_r(noise, target)) < 0.25
    assert mechanism.probe_r(carrying, target) == mechanism.probe_r(carrying, target)  # seeded folds
    with pytest.raises(MerError, match="at least 10 rows"):
        mechanism.probe_r(noise[:8], target[:8])


def test_paired_change_and_over_models_on_known_differences():
    import pandas as pd

    rows = [{"system": s, "seed": k, "condition": c, "r_emotion": base + shift + 0.01 * k}
            for s, base, drop in (("A2E", 0.8, -0.2), ("A2M2E", 0.7, 0.0)) for k in range(5)
            for c, shift in (("intact", 0.0), ("cue removed", drop + 0.002 * (k % 2)))]
    change = mechanism.paired_change(pd.DataFrame(rows), "r_emotion", "intact").set_index("system")
    assert change.loc["A2E", "estimate"] == pytest.approx(-0.2 + 0.002 * 2 / 5)
    assert change.loc["A2E", "verdict"] == "holds" and change.loc["A2E", "ci_high"] < 0
    assert change.loc["A2M2E", "ci_low"] < 0 < change.loc["A2M2E", "ci_high"]
    ratios = pd.DataFrame({"system": ["A"] * 4 + ["B"] * 4, "ratio": [2.0, 2.2, 1.9, 2.1, 0.5, 0.6, 0.4, 0.5]})
    out = mechanism.over_models(ratios, "ratio", ["system"], reference=1.0).set_index("system")
    assert out.loc["A", "estimate"] == pytest.approx(2.05) and out.loc["A", "verdict"] == "holds"
    assert out.loc["B", "verdict"] == "contradicted" and out.loc["B", "n_models"] == 4


def test_energy_share_table_reads_the_saved_adversaries(tmp_path):
    import pandas as pd

    from mer_lib import artifacts

    mask = np.zeros(6, bool)
    mask[2] = True
    x = np.zeros((3, 1, 4, 6), np.float32)
    delta = np.zeros_like(x)
    delta[..., 2] = 1.0  # all energy in the cue band
    artifacts.write_npy(tmp_path / "a" / "adversarial.npy", x + delta)
    artifacts.write_npy(tmp_path / "b" / "adversarial.npy", x + 1.0)  # spread evenly
    rows = pd.DataFrame({"system": ["A2E"] * 3 + ["A2M2E"] * 3, "seed": 1,
                         "result_dir": [str(tmp_path / "a")] * 3 + [str(tmp_path / "b")] * 3})
    table = mechanism.energy_share_table(rows, x, mask).set_index("system")
    np.testing.assert_allclose(table["energy_share"], [1.0, 1 / 6])
    np.testing.assert_allclose(table["ratio"], [6.0, 1.0])


def test_the_ablation_inputs_match_the_two_worlds_caches(tmp_path):
    from mer_lib.config import get_profile
    from mer_lib.data.stage import prepare_data
    from mer_lib.data.synth.cue import CueConfig, write_cue_world
    from mer_lib.data.synth.writer import generate_soundtracks

    source = generate_soundtracks(tmp_path / "data", n_excerpts=20, duration_s=2.0, seed=3, progress=False)
    config = CueConfig()
    table = write_cue_world(source, tmp_path / "cue", config, progress=False)
    profile = get_profile("smoke")
    plain = prepare_data(profile, tmp_path / "run-plain", data_dir=source, progress=False)
    world = prepare_data(profile, tmp_path / "run-cue", data_dir=tmp_path / "cue", progress=False)
    test = list(world.numbers("test"))
    removed = mechanism.excerpts_without_cue(world, plain, test)
    np.testing.assert_array_equal(removed, ((plain.excerpts(test, standardize=False) - world.mean) / world.std))
    assert not np.array_equal(removed, world.excerpts(test))  # the cue changed the inputs
    # the cue at an excerpt's own level rebuilds that excerpt as cached (up to the recorded RMS's rounding)
    k = test[0]
    own = mechanism.excerpts_with_cue_at(world, plain, [k], config, table.at[k, "target_level_db"], profile.features)
    np.testing.assert_allclose(own, world.excerpts([k]), atol=1e-4)
    other = mechanism.excerpts_with_cue_at(world, plain, [k], config, -36.0 if table.at[k, "level_db"] < -40 else -56.0,
                                           profile.features)
    assert np.abs(other - world.excerpts([k])).max() > 1e-3
