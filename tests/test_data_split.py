"""The 360-item split reproduces the authors' test excerpts."""
from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from mer_lib.data.split import split_indices, split_lengths, split_numbers
from mer_lib.errors import MerError


def _published_test_ids(log_csv) -> set[int]:
    files = pd.read_csv(log_csv)["file"]
    return {int(ast.literal_eval(f)[0].split(".")[0]) for f in files}


def test_lengths():
    assert split_lengths(360) == [288, 36, 36]
    assert split_lengths(40) == [32, 4, 4]
    with pytest.raises(MerError):
        split_lengths(5)
    with pytest.raises(MerError):
        split_lengths(100, (0.5, 0.5, 0.5))


def test_split_is_a_partition():
    parts = split_indices(360)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(360))
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [288, 36, 36]


def test_split_yields_the_published_test_excerpts(published_runs):
    test_ids = set(split_numbers(np.arange(1, 361))["test"].tolist())
    logs = sorted(published_runs.glob("*/log.csv"))
    assert len(logs) == 50
    for log in logs:
        assert _published_test_ids(log) == test_ids, log


def test_split_depends_on_seed_only():
    a = split_numbers(np.arange(1, 361))
    b = split_numbers(np.arange(1, 361), seed=42)
    c = split_numbers(np.arange(1, 361), seed=43)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    with pytest.raises(MerError):
        split_numbers([3, 2, 1])
