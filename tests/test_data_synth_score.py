"""Tests of mer_lib.data.synth.score: the composer of the synthetic excerpts."""
from __future__ import annotations

import numpy as np
import pytest
from synth_fixtures import BASE

from mer_lib.data.synth import score


def test_melody_is_stepwise_when_melodious() -> None:
    def intervals(m: float) -> tuple[float, int]:
        steps, count = [], 0
        for seed in range(5):
            composed = score.compose({**BASE, "melodiousness": m}, 12.0, np.random.default_rng(seed))
            pitches = composed["melody"][2]
            steps += list(np.abs(np.diff(pitches)))
            count += len(pitches)
        return float(np.median(steps)), count

    (step_hi, n_hi), (step_lo, n_lo) = intervals(0.9), intervals(0.1)
    assert step_hi <= 2 and step_lo >= 5 and n_hi > 2 * n_lo


def test_compose_is_a_function_of_controls_and_rng() -> None:
    a = score.compose(BASE, 6.0, np.random.default_rng(4))
    b = score.compose(BASE, 6.0, np.random.default_rng(4))
    assert set(a) == {"chords", "bass", "melody", "drums", "harmony"}
    for part in ("chords", "bass", "melody", "drums"):
        assert len({len(x) for x in a[part]}) == 1, part  # onsets, (gates,) values, velocities agree
        assert np.array_equal(a[part][0], b[part][0]) and (a[part][0] >= 0).all()
    assert not np.array_equal(a["drums"][0], score.compose(BASE, 6.0, np.random.default_rng(5))["drums"][0])
    assert (a["chords"][1] > 0).all() and a["chords"][0].max() > 6.0  # the score outlasts the excerpt


def test_tempo_sets_the_pulse() -> None:
    def beat_period(tempo: float) -> float:
        composed = score.compose({**BASE, "tempo": tempo, "rhythm_stability": 1.0}, 8.0, np.random.default_rng(0))
        onsets, kinds, _ = composed["drums"]
        kicks = np.array([t for t, k in zip(onsets, kinds) if k != "hat" and k != "shaker"])
        return float(np.median(np.diff(np.sort(kicks))))

    assert beat_period(0.0) == pytest.approx(1.0, rel=0.05)  # 60 BPM
    assert beat_period(1.0) == pytest.approx(60 / 170, rel=0.05)


@pytest.mark.parametrize("share", [0.0, 0.13, 0.5, 0.77, 1.0])
def test_even_share_spreads_the_true_values_evenly(share):
    flags = score.even_share(share, 40, np.random.default_rng(5))
    assert flags.dtype == bool and len(flags) == 40
    for k in (3, 5, 10):  # every window of k consecutive units holds share * k, +- 1
        counts = np.convolve(flags.astype(int), np.ones(k, dtype=int), mode="valid")
        assert np.all(np.abs(counts - share * k) < 1 + 1e-9)
