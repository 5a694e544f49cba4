"""File names of the Soundtracks / mid-level datasets, shared by the loader and the generator (protocol §2.1).

::

    data_dir/Set1/001.wav ...                      audio (mp3, wav or flac)
    data_dir/mean_ratings_set1.csv                 emotion ratings 1-9
    data_dir/metadata_annotations/metadata.csv     ';' separated, song id -> Set-1 number
    data_dir/metadata_annotations/annotations.csv  mid-level ratings 1-10, by song id
    data_dir/synthetic/controls.csv                synthetic data only: ground-truth controls
"""
from __future__ import annotations

#: Audio file extensions recognised in ``Set1`` (matched case-insensitively).
AUDIO_EXTENSIONS: tuple[str, ...] = (".mp3", ".wav", ".flac")


#: Default names inside ``data_dir``.
AUDIO_SUBDIR = "Set1"


RATINGS_FILE = "mean_ratings_set1.csv"


ANNOTATIONS_SUBDIR = "metadata_annotations"


METADATA_FILE = "metadata.csv"


ANNOTATIONS_FILE = "annotations.csv"


#: Value of the metadata ``Source`` column that marks the Soundtracks excerpts.
SOUNDTRACKS_SOURCE = "soundtracks"


def audio_stem(number: int) -> str:
    return f"{number:03d}"


TRUTH_SUBDIR, CONTROLS_FILE, GENERATOR_FILE = "synthetic", "controls.csv", "generator.json"


PARTIAL_FILE = "generator.partial.json"  # written first, removed after generator.json


TEXT_FILES: tuple[str, ...] = (RATINGS_FILE, f"{ANNOTATIONS_SUBDIR}/{METADATA_FILE}",
                               f"{ANNOTATIONS_SUBDIR}/{ANNOTATIONS_FILE}", f"{TRUTH_SUBDIR}/{CONTROLS_FILE}")


# --------------------------------------------------------------------------- generation (I/O)
def synthetic_audio_path(number: int) -> str:
    return f"{AUDIO_SUBDIR}/{number:03d}.wav"
