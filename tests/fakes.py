"""Small learnable data and an in-memory stand-in for PreparedData, shared by the stage tests."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL

#: Frames and frequency bands of the tiny test spectrograms.
T, FBINS = 24, 20


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs whose mean level drives the targets (learnable), plus noise: ``x, emotions, midlevel``."""
    rng = np.random.default_rng(seed)
    level = rng.random((n, 1))
    x = (rng.standard_normal((n, 1, T, FBINS)) + 2 * level[:, :, None, None]).astype(np.float32)
    y = np.clip(0.2 + 0.5 * level + 0.05 * rng.standard_normal((n, 8)), 0.1, 0.9).astype(np.float32)
    m = np.clip(0.3 + 0.6 * level + 0.05 * rng.standard_normal((n, 7)), 0.1, 1.0).astype(np.float32)
    return x, y, m


@dataclasses.dataclass
class FakePrepared:
    """In-memory stand-in for :class:`mer_lib.data.cache.PreparedData` (the attributes and methods stages use)."""

    table: pd.DataFrame
    cache_dir: Path
    x: dict
    mean: float = 0.0
    std: float = 1.0
    excerpt_frames: int = T

    def numbers(self, split):
        sub = self.table[self.table["split"] == split]
        return sub.sort_values("split_position").index.to_numpy()

    def excerpts(self, numbers=None, standardize=True):
        return np.stack([self.x[int(n)] for n in numbers]).astype(np.float32)


def fake_prepared(tmp_path: Path, first_number: int = 1, decimals: int | None = None, mean: float = 0.0,
                  std: float = 1.0) -> FakePrepared:
    """24 excerpts (16 train, 4 valid, 4 test) numbered from ``first_number``, with a cache manifest.

    ``decimals`` rounds the targets (as a log file would store them).
    """
    x, y, m = make_data(24, seed=1)
    numbers = np.arange(first_number, first_number + 24)
    values = np.concatenate([y, m], axis=1)
    table = pd.DataFrame(values if decimals is None else np.round(values.astype(np.float64), decimals),
                         index=pd.Index(numbers, name="number"), columns=list(EMOTIONS) + list(MIDLEVEL))
    table["split"] = ["train"] * 16 + ["valid"] * 4 + ["test"] * 4
    table["split_position"] = [*range(16), *range(4), *range(4)]
    table["offset"] = 0
    cache = tmp_path / "run" / "data" / "cache"
    artifacts.write_json(cache / "manifest.json", {"frontend_hash": "f", "files": {
        f"{n:03d}": {"audio_sha256": f"{n}"} for n in numbers}})
    return FakePrepared(table, cache, {int(n): x[i] for i, n in enumerate(numbers)}, mean, std)


def weights(model) -> dict[str, torch.Tensor]:
    """A detached copy of a model's state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    """Two state dicts hold the same tensors, bit for bit."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
