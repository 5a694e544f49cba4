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
