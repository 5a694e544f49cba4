"""Segment-grid explanations and their veracity, on constructed cases whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mer_lib.analysis import explanations as ex
from mer_lib.errors import MerError

SHAPE = (20, 12)


def test_segment_mask_is_a_time_major_grid_of_near_equal_blocks():
    mask = ex.segment_mask((23, 10), (5, 4))
    assert mask.shape == (23, 10) and set(np.unique(mask)) == set(range(20))
    sizes = np.bincount(mask.ravel())
    assert sizes.max() - sizes.min() <= 5 + 3  # array_split: rows differ by at most 1, columns by at most 1
    assert (mask[:, 0] // 4 == np.repeat(np.arange(5), [5, 5, 5, 4, 4])).all()  # time slices first
    assert (mask[0] == np.repeat(np.arange(4), [3, 3, 2, 2])).all()  # then band slices
    with pytest.raises(MerError, match="does not fit"):
        ex.segment_mask((3, 10), (5, 4))


def _delta_in(segment: int, mask: np.ndarray, n: int = 2, value: float = 0.5) -> np.ndarray:
    d = np.zeros((n, 1, *mask.shape), np.float32)
    d[:, 0, mask == segment] = value
    return d


def test_segment_energy_and_the_oracle_find_the_perturbed_segment():
    mask = ex.segment_mask(SHAPE)
    d = _delta_in(7, mask)
    energy = ex.segment_energy(d, mask)
    assert energy.shape == (2, 20)
    assert energy[:, 7] == pytest.approx(0.25 * (mask == 7).sum()) and np.delete(energy, 7, axis=1).max() == 0
    assert ex.top_k(energy, 1)[:, 7].all()
    with pytest.raises(MerError, match="inputs"):
        ex.segment_energy(d[:, 0], mask)


def test_top_k_random_and_overlap():
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    assert ex.top_k(scores, 2).tolist() == [[False, True, False, True], [True, True, False, False]]
    r = ex.random_segments(50, 20, 3, seed=4)
    assert (r.sum(axis=1) == 3).all() and np.array_equal(r, ex.random_segments(50, 20, 3, seed=4))
    assert r.any(axis=0).sum() > 10  # draws spread over the segments
    assert ex.top_overlap(scores, scores, 2).tolist() == [1.0, 1.0]
    assert ex.top_overlap(scores, -scores, 2).tolist() == [0.0, 0.0]
    with pytest.raises(MerError):
        ex.top_k(scores, 5)


def test_reinsert_puts_the_perturbation_back_only_in_the_chosen_segments():
    mask = ex.segment_mask(SHAPE)
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((2, 1, *SHAPE)).astype(np.float32)
    adv = clean + rng.standard_normal(clean.shape).astype(np.float32)
    chosen = np.zeros((2, 20), bool)
    chosen[0, 3] = chosen[1, [0, 19]] = True
    out = ex.reinsert(clean, adv, mask, chosen)
    changed = out != clean
    assert np.array_equal(changed[0, 0], mask == 3)
    assert np.array_equal(changed[1, 0], np.isin(mask, [0, 19]))
    assert np.array_equal(ex.reinsert(clean, adv, mask, np.ones((2, 20), bool)), adv)
    assert np.array_equal(ex.reinsert(clean, adv, mask, np.zeros((2, 20), bool)), clean)


def test_recovery_of_a_linear_error():
    """Error linear in the input: the segment holding the whole perturbation recovers 1, the others 0."""
    mask = ex.segment_mask(SHAPE)
    w = np.random.default_rng(1).random(SHAPE)
    err = lambda x: 1.0 + (x[:, 0] * w).sum(axis=(1, 2))  # noqa: E731
    clean = np.zeros((2, 1, *SHAPE))
    adv = clean + _delta_in(11, mask)
    for segment, expected in ((11, 1.0), (2, 0.0)):
        chosen = np.zeros((2, 20), bool)
        chosen[:, segment] = True
        rec = ex.recovery(err(clean), err(adv), err(ex.reinsert(clean, adv, mask, chosen)))
        assert rec == pytest.approx([expected, expected])
    assert np.isnan(ex.recovery([1.0], [1.0], [1.5])).all()  # no damage: nothing to recover


class _OneSegment(torch.nn.Module):
    """A model whose single output is the sum of its input over one segment (its emotions: that sum, 8 times)."""

    def __init__(self, mask: np.ndarray, segment: int) -> None:
        super().__init__()
        self.register_buffer("w", torch.as_tensor(mask == segment, dtype=torch.float32))

    def forward(self, x):
        s = (x[:, 0] * self.w).sum(dim=(1, 2), keepdim=False)[:, None]
        return type("Out", (), {"emotions": s.repeat(1, 8), "bottleneck": s.repeat(1, 7)})()


@pytest.mark.parametrize("method", ex.METHODS)
def test_every_method_ranks_the_only_segment_the_score_reads_first(method):
    mask = ex.segment_mask(SHAPE)
    model = _OneSegment(mask, 13)
    x = np.random.default_rng(2).random((2, 1, *SHAPE)).astype(np.float32) + 1.0  # positive: the sum grows with x
    targets = np.full((2, 7), 1.0, np.float32)
    attr = ex.explain(ex.direction_score(model), x, targets, mask, method, n_samples=64, seed=3)
    assert attr.shape == (2, 20) and ex.top_k(attr, 1)[:, 13].all()
    assert np.array_equal(attr, ex.explain(ex.direction_score(model), x, targets, mask, method, n_samples=64, seed=3))
    if method == "integrated_gradients":  # completeness: the attribution is the score's rise from the baseline
        assert attr[:, 13] == pytest.approx(7 * x[:, 0][:, mask == 13].sum(axis=1), rel=1e-4)
        assert np.abs(np.delete(attr, 13, axis=1)).max() == 0


def test_explain_rejects_bad_input():
    mask = ex.segment_mask(SHAPE)
    model = _OneSegment(mask, 0)
    x = np.zeros((2, 1, *SHAPE), np.float32)
    with pytest.raises(MerError, match="method"):
        ex.explain(ex.error_score(model), x, np.zeros((2, 8)), mask, "saliency")
    with pytest.raises(MerError, match="targets"):
        ex.explain(ex.error_score(model), x, np.zeros((3, 8)), mask)
