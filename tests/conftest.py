"""Shared fixtures: paths to the reference material shipped in ``reference/``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Unit tests run their jobs in-process (fast for tiny models, and the in-memory test
# doubles need no pickling); tests/test_jobs.py exercises the worker pool explicitly.
os.environ.setdefault("MER_WORKERS", "0")

REPO = Path(__file__).resolve().parents[1]
MADMOM_REF = REPO / "reference" / "madmom"
PUBLISHED_RUNS = REPO / "reference" / "published_runs"


@pytest.fixture(scope="session")
def madmom_ref() -> Path:
    """Folder of madmom's reference outputs (reference/madmom)."""
    if not MADMOM_REF.is_dir():
        pytest.fail(f"reference material missing: {MADMOM_REF} (shipped with the repository; is the clone complete?)")
    return MADMOM_REF


@pytest.fixture(scope="session")
def published_runs() -> Path:
    """Folder of the authors' published attack logs."""
    if not PUBLISHED_RUNS.is_dir():
        pytest.fail(f"reference material missing: {PUBLISHED_RUNS} (shipped with the repository; is the clone complete?)")
    return PUBLISHED_RUNS


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest and immune to CPU oversubscription.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
