"""File names of the datasets (protocol §2.1) and of the synthetic ground truth, shared by loader and generator.

Names relative to ``data_dir`` are ``/``-separated strings (the keys of the synthetic dataset's checksum
manifest); the functions taking ``data_dir`` return paths inside it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

#: Audio file extensions recognised in ``Set1`` (matched case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".mp3", ".wav", ".flac")


#: Folder of the Set-1 audio files.
AUDIO_SUBDIR = "Set1"


#: Emotion ratings (comma separated).
RATINGS_FILE = "mean_ratings_set1.csv"


#: Folder of the mid-level metadata and annotations.
ANNOTATIONS_SUBDIR = "metadata_annotations"


#: Mid-level metadata (semicolon separated), inside :data:`ANNOTATIONS_SUBDIR`.
METADATA_FILE = "metadata.csv"


#: Mid-level annotations (comma separated), inside :data:`ANNOTATIONS_SUBDIR`.
ANNOTATIONS_FILE = "annotations.csv"


#: The Soundtracks Set-1 excerpt numbers (the published split is drawn from exactly these).
SET1_NUMBERS: tuple[int, ...] = tuple(range(1, 361))


#: Value of the metadata ``Source`` column that marks the Soundtracks excerpts.
SOUNDTRACKS_SOURCE = "soundtracks"


#: Folder of the synthetic dataset's ground truth and marker.
TRUTH_SUBDIR = "synthetic"


#: Ground-truth controls of the synthetic excerpts, inside :data:`TRUTH_SUBDIR`.
CONTROLS_FILE = "controls.csv"


#: Marker of a finished synthetic dataset (configuration and checksums), written last.
GENERATOR_FILE = "generator.json"


#: Marker of an unfinished synthetic dataset: written first, removed after :data:`GENERATOR_FILE`.
PARTIAL_FILE = "generator.partial.json"


#: :data:`METADATA_FILE` relative to ``data_dir``.
METADATA_RELPATH = f"{ANNOTATIONS_SUBDIR}/{METADATA_FILE}"


#: :data:`ANNOTATIONS_FILE` relative to ``data_dir``.
ANNOTATIONS_RELPATH = f"{ANNOTATIONS_SUBDIR}/{ANNOTATIONS_FILE}"


#: :data:`CONTROLS_FILE` relative to ``data_dir``.
CONTROLS_RELPATH = f"{TRUTH_SUBDIR}/{CONTROLS_FILE}"


#: Every text file of a synthetic dataset, relative to ``data_dir``.
TEXT_FILES: tuple[str, ...] = (RATINGS_FILE, METADATA_RELPATH, ANNOTATIONS_RELPATH, CONTROLS_RELPATH)


_SYNTHETIC_AUDIO_RE = re.compile(r"\d{3,}\.wav")


def audio_stem(number: int) -> str:
    """File stem of the audio of Set-1 excerpt ``number``: three digits at least, ``7`` -> ``"007"``."""
    return f"{number:03d}"


def synthetic_audio_path(number: int) -> str:
    """The synthetic audio file of excerpt ``number``, relative to ``data_dir`` (``"Set1/007.wav"``)."""
    return f"{AUDIO_SUBDIR}/{audio_stem(number)}.wav"


def is_synthetic_audio_name(name: str) -> bool:
    """Whether a file name in ``Set1`` is one the generator writes (``NNN.wav``, three digits at least)."""
    return _SYNTHETIC_AUDIO_RE.fullmatch(name) is not None


def audio_folder(data_dir: str | os.PathLike) -> Path:
    """``data_dir/Set1``: the audio files."""
    return Path(data_dir) / AUDIO_SUBDIR


def ratings_path(data_dir: str | os.PathLike) -> Path:
    """``data_dir/mean_ratings_set1.csv``: the emotion ratings."""
    return Path(data_dir) / RATINGS_FILE


def annotations_folder(data_dir: str | os.PathLike) -> Path:
    """``data_dir/metadata_annotations``: the mid-level metadata and annotations."""
    return Path(data_dir) / ANNOTATIONS_SUBDIR


def controls_path(data_dir: str | os.PathLike) -> Path:
    """``data_dir/synthetic/controls.csv``: the ground-truth controls of a synthetic dataset."""
    return Path(data_dir) / TRUTH_SUBDIR / CONTROLS_FILE


def generator_path(data_dir: str | os.PathLike) -> Path:
    """``data_dir/synthetic/generator.json``: the marker of a finished synthetic dataset."""
    return Path(data_dir) / TRUTH_SUBDIR / GENERATOR_FILE


def partial_path(data_dir: str | os.PathLike) -> Path:
    """``data_dir/synthetic/generator.partial.json``: the marker of an unfinished synthetic dataset."""
    return Path(data_dir) / TRUTH_SUBDIR / PARTIAL_FILE
