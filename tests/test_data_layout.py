"""Tests of mer_lib.data.layout: the file names of the datasets (protocol §2.1)."""
from __future__ import annotations

import pytest

from mer_lib.data import layout


@pytest.mark.parametrize("number, stem", [(1, "001"), (42, "042"), (360, "360"), (1234, "1234")])
def test_audio_names(number: int, stem: str) -> None:
    assert layout.audio_stem(number) == stem
    assert layout.synthetic_audio_path(number) == f"Set1/{stem}.wav"
    assert layout.is_synthetic_audio_name(f"{stem}.wav")


@pytest.mark.parametrize("name", ["1.wav", "01.wav", "001.mp3", "001.wav.tmp", "a001.wav", "take 001.wav"])
def test_other_files_are_not_synthetic_audio(name: str) -> None:
    assert not layout.is_synthetic_audio_name(name)
