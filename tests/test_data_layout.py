"""Tests of mer_lib.data.layout: the file names of the datasets (protocol §2.1)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mer_lib.data import layout


def test_names_of_the_real_layout() -> None:
    root = Path("data")
    assert layout.audio_folder(root) == root / "Set1"
    assert layout.ratings_path(root) == root / "mean_ratings_set1.csv"
    assert layout.annotations_folder(root) == root / "metadata_annotations"
    assert layout.annotations_folder(root) / layout.METADATA_FILE == root / "metadata_annotations" / "metadata.csv"
    assert layout.annotations_folder(root) / layout.ANNOTATIONS_FILE == root / layout.ANNOTATIONS_RELPATH
    assert layout.SOUNDTRACKS_SOURCE == "soundtracks"


def test_names_of_the_synthetic_extras() -> None:
    assert layout.controls_path("d") == Path("d/synthetic/controls.csv")
    assert layout.generator_path("d") == Path("d/synthetic/generator.json")
    assert layout.partial_path("d") == Path("d/synthetic/generator.partial.json")
    assert layout.TEXT_FILES == ("mean_ratings_set1.csv", "metadata_annotations/metadata.csv",
                                 "metadata_annotations/annotations.csv", "synthetic/controls.csv")
    assert all(Path("d") / name == layout.controls_path("d") for name in layout.TEXT_FILES[3:])


@pytest.mark.parametrize("number, stem", [(1, "001"), (42, "042"), (360, "360"), (1234, "1234")])
def test_audio_names(number: int, stem: str) -> None:
    assert layout.audio_stem(number) == stem
    assert layout.synthetic_audio_path(number) == f"Set1/{stem}.wav"
    assert layout.is_synthetic_audio_name(f"{stem}.wav")


@pytest.mark.parametrize("name", ["1.wav", "01.wav", "001.mp3", "001.wav.tmp", "a001.wav", "take 001.wav"])
def test_other_files_are_not_synthetic_audio(name: str) -> None:
    assert not layout.is_synthetic_audio_name(name)
