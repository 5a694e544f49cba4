"""The train/validation/test split (protocol §4).

:func:`split_indices` reproduces the reference's ``random_split`` permutation exactly; other dataset sizes (the
scaled-down synthetic profiles) follow the same 80/10/10 rule.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mer_lib.errors import MerError

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def split_lengths(n_items: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[int]:
    """Split sizes: validation and test get ``round(f * n)``, train the rest (``[288, 36, 36]`` for 360)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise MerError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_valid = int(round(fractions[1] * n_items))
    n_test = int(round(fractions[2] * n_items))
    n_train = n_items - n_valid - n_test
    if min(n_train, n_valid, n_test) < 1:
        raise MerError(f"{n_items} items are too few for a {fractions} split: got {[n_train, n_valid, n_test]}")
    return [n_train, n_valid, n_test]


def split_indices(n_items: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 42) -> dict[str, np.ndarray]:
    """Positions (0-based, in ``number`` order) of the items of every split of ``n_items`` excerpts.

    ``random_split`` with ``torch.Generator().manual_seed(seed)``, as in the reference (protocol §4).

    Returns
    -------
    dict
        ``{"train": ..., "valid": ..., "test": ...}`` int64 arrays, in the order ``random_split`` yields them.
    """
    lengths = split_lengths(n_items, fractions)
    parts = torch.utils.data.random_split(range(n_items), lengths,
                                          generator=torch.Generator().manual_seed(seed))
    return {name: np.asarray(part.indices, dtype=np.int64) for name, part in zip(SPLITS, parts)}


def split_numbers(numbers: Sequence[int], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                  seed: int = 42) -> dict[str, np.ndarray]:
    """Excerpt IDs of every split of ``numbers``, which must increase strictly (else :class:`MerError`)."""
    numbers = np.asarray(numbers, dtype=np.int64)
    if np.any(np.diff(numbers) <= 0):
        raise MerError("split_numbers needs the excerpt numbers sorted ascending without duplicates")
    return {name: numbers[idx] for name, idx in split_indices(len(numbers), fractions, seed).items()}
