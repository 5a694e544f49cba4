"""Shared values of the tests of mer_lib.data.synth (tests/test_data_synth_*.py)."""
from __future__ import annotations

from mer_lib.data.synth import model

#: Sample rate of the test renderings and datasets.
SR = 22050

#: Every control at mid-range.
BASE = {c: 0.5 for c in model.CONTROLS}
