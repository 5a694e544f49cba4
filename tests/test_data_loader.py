"""Tests of mer_lib.data: the loaders of Soundtracks Set 1 and its mid-level features.

Every test builds a tiny dataset in ``tmp_path`` in the on-disk formats of
protocol §2.1, then loads it intact, in an accepted variant, or broken in one
specific way.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.data.loader import load_soundtracks, read_midlevel, read_ratings
from mer_lib.errors import MerError

IDS = [1, 2, 3, 5, 12]
#: Row order of the ratings file (not sorted), and how each number is spelled.
RATINGS_ORDER = [5, 1, 12, 2, 3]
SPELLING = {5: "5", 1: "001", 12: "012", 2: "002", 3: "003"}
#: Mid-level song ids of the Soundtracks excerpts, deliberately unrelated to row order.
SONG_OF = {1: 407, 2: 18, 3: 950, 5: 33, 12: 600}
RATINGS_HEADER = ["number", *EMOTIONS, "TARGET"]
ANNOTATIONS_HEADER = ["song_id", *(f" {m} " for m in MIDLEVEL)]


def emotion(number: int, j: int) -> float:
    """Raw 1-9 rating with two decimals."""
    return round(1.0 + ((number * 37 + j * 11) % 800) / 100, 2)


def feature(number: int, j: int) -> float:
    """Raw 1-10 mid-level value."""
    return round(1.0 + ((number * 53 + j * 17) % 900) / 100, 2)


def write_csv(path: Path, rows: list[list[str]], delimiter: str = ",", bom: bool = False) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as fh:
        csv.writer(fh, delimiter=delimiter, lineterminator="\n").writerows(rows)


def read_csv(path: Path, delimiter: str = ",") -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh, delimiter=delimiter))


def edit_csv(path: Path, change: Callable[[list[list[str]]], object], delimiter: str = ",") -> None:
    """Apply ``change`` to the rows (header first) of a CSV file in place."""
    rows = read_csv(path, delimiter)
    change(rows)
    write_csv(path, rows, delimiter)


def tone(seconds: float, sr: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return 0.1 * np.sin(2 * np.pi * 440 * t)


def write_wav(path: Path, seconds: float = 1.2, sr: int = 22050, subtype: str = "PCM_16") -> None:
    """A tone: at least the loader's 1-s minimum by default, shorter than the 10-s excerpt."""
    sf.write(path, tone(seconds, sr), sr, subtype=subtype)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A valid 5-excerpt dataset in the default layout."""
    root = tmp_path / "soundtracks"
    (root / "Set1").mkdir(parents=True)
    (root / "metadata_annotations").mkdir()
    for n in IDS:
        if n == 12:
            sf.write(root / "Set1" / "012.flac", tone(1.0, 16000), 16000)
        else:
            write_wav(root / "Set1" / f"{n:03d}.wav")
    write_csv(root / "mean_ratings_set1.csv", [RATINGS_HEADER] + [
        [SPELLING[n], *(f"{emotion(n, j):.2f}" for j in range(8)), "HAPPY"] for n in RATINGS_ORDER])
    # metadata: other sources reuse Set-1 numbers as their own IDs; one
    # soundtracks Source is spelled with different case and spaces.
    meta = [["song id", "Source", "ID at file source", "Title", "Artist", "Album_name"]]
    meta += [["1", "allmusic", "1", "x; y", "A", "B"], ["2", "jamendo", "12", "t", "a", "b"]]
    for n in [12, 3, 1, 5, 2]:
        source = " Soundtracks " if n == 3 else "soundtracks"
        meta.append([str(SONG_OF[n]), source, str(n), f"track {n}", "", ""])
    meta.append(["2001", "musicnet", "3", "", "", ""])
    write_csv(root / "metadata_annotations" / "metadata.csv", meta, delimiter=";")
    ann = [ANNOTATIONS_HEADER, ["1", *["5"] * 7], ["2", *["6"] * 7], ["2001", *["7"] * 7]]
    for n in [2, 5, 12, 1, 3]:
        ann.insert(2, [str(SONG_OF[n]), *(f"{feature(n, j):.2f}" for j in range(7))])
    write_csv(root / "metadata_annotations" / "annotations.csv", ann)
    return root


def check_valid(df: pd.DataFrame) -> None:
    assert list(df.index) == IDS
    assert df.index.name == "number" and df.index.dtype == np.int64
    assert list(df.columns) == ["audio_path", *EMOTIONS, *MIDLEVEL]
    for n in IDS:
        assert df.loc[n, list(EMOTIONS)].tolist() == pytest.approx(
            [emotion(n, j) / 10 for j in range(8)])
        assert df.loc[n, list(MIDLEVEL)].tolist() == pytest.approx(
            [feature(n, j) / 10 for j in range(7)])
        path = Path(df.loc[n, "audio_path"])
        assert path.is_absolute() and path.exists() and path.stem == f"{n:03d}"
    assert (df[list(EMOTIONS) + list(MIDLEVEL)].dtypes == np.float64).all()


def test_load_valid_dataset(data_dir: Path) -> None:
    df = load_soundtracks(data_dir)
    check_valid(df)
    assert df.attrs["ratings_csv"] == str(data_dir / "mean_ratings_set1.csv")
    assert df.attrs["annotations_csv"].endswith("annotations.csv")
    assert df.attrs["unrated_audio"] == []


def test_readers_return_raw_values(data_dir: Path) -> None:
    ratings = read_ratings(data_dir / "mean_ratings_set1.csv")
    assert list(ratings.index) == IDS and list(ratings.columns) == list(EMOTIONS)
    assert ratings.loc[12, "valence"] == pytest.approx(emotion(12, 0))
    mid = read_midlevel(data_dir / "metadata_annotations")
    assert list(mid.index) == IDS and list(mid.columns) == list(MIDLEVEL)
    assert mid.loc[3, "minorness"] == pytest.approx(feature(3, 6))


def test_explicit_paths_and_unrated_audio(data_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    (data_dir / "Set1").rename(moved)
    (data_dir / "mean_ratings_set1.csv").rename(tmp_path / "ratings.csv")
    write_wav(moved / "360.wav")
    (moved / "notes.txt").write_text("not audio")
    df = load_soundtracks(None, ratings_csv=tmp_path / "ratings.csv",
                          annotations_dir=data_dir / "metadata_annotations", audio_dir=moved)
    check_valid(df)
    assert df.attrs["unrated_audio"] == [str(moved / "360.wav")]


# --------------------------------------------------------------------------- accepted variants
def bom_capitalised(root: Path) -> None:
    rows = read_csv(root / "mean_ratings_set1.csv")
    rows[0][0], rows[0][-1] = "Number", "TARGET"
    write_csv(root / "mean_ratings_set1.csv", rows, bom=True)


def trailing_empty_columns(root: Path) -> None:
    edit_csv(root / "mean_ratings_set1.csv", lambda rows: [r.extend(["", ""]) for r in rows])


def pandas_unnamed_column(root: Path) -> None:
    def change(rows: list[list[str]]) -> None:
        rows[0].append("Unnamed: 10")
        for r in rows[1:]:
            r.append("")
    edit_csv(root / "mean_ratings_set1.csv", change)


def spaced_annotation_header(root: Path) -> None:
    def change(rows: list[list[str]]) -> None:
        rows[0] = [f"  {name}   " for name in rows[0]]
    edit_csv(root / "metadata_annotations" / "annotations.csv", change)


@pytest.mark.parametrize("variant", [
    bom_capitalised, trailing_empty_columns, pandas_unnamed_column, spaced_annotation_header,
])
def test_accepted_variants(data_dir: Path, variant: Callable[[Path], None]) -> None:
    variant(data_dir)
    check_valid(load_soundtracks(data_dir))


# --------------------------------------------------------------------------- failures
RAT = "mean_ratings_set1.csv"
META = "metadata_annotations/metadata.csv"
ANN = "metadata_annotations/annotations.csv"


def set_cell(file: str, row: int, col: int, value: str, delimiter: str = ",") -> Callable[[Path], None]:
    def change(root: Path) -> None:
        edit_csv(root / file, lambda rows: rows[row].__setitem__(col, value), delimiter)
    return change


def drop_column(file: str, col: int, delimiter: str = ",") -> Callable[[Path], None]:
    return lambda root: edit_csv(root / file, lambda rows: [r.pop(col) for r in rows], delimiter)


def append_row(file: str, row: list[str], delimiter: str = ",") -> Callable[[Path], None]:
    return lambda root: edit_csv(root / file, lambda rows: rows.append(row), delimiter)


def drop_row(file: str, first_cell: str, delimiter: str = ",") -> Callable[[Path], None]:
    def change(rows: list[list[str]]) -> None:
        rows[:] = [r for r in rows if r[0] != first_cell]
    return lambda root: edit_csv(root / file, change, delimiter)


def garbage_wav(root: Path) -> None:
    (root / "Set1" / "003.wav").write_bytes(np.random.default_rng(0).bytes(3000))


def empty_wav(root: Path) -> None:
    (root / "Set1" / "003.wav").write_bytes(b"")


def cut_wav(root: Path, keep_bytes: int = 2000, seconds: float = 1.2) -> None:
    """A WAV cut after ``keep_bytes`` bytes, as an interrupted copy leaves it."""
    path = root / "Set1" / "003.wav"
    write_wav(path, seconds)
    path.write_bytes(path.read_bytes()[:keep_bytes])


def cut_long_wav(root: Path) -> None:
    """Cut short, yet still longer than the 1-s minimum: only the header betrays it."""
    cut_wav(root, keep_bytes=44 + 2 * 22050 * 2, seconds=3.0)


def nan_wav(root: Path) -> None:
    x = tone(1.5)
    x[[100, 2205, 3000]] = [np.nan, np.inf, -np.inf]
    sf.write(root / "Set1" / "003.wav", x, 22050, subtype="FLOAT")


def silent_wav(root: Path) -> None:
    sf.write(root / "Set1" / "003.wav", np.zeros(22050 * 2), 22050, subtype="PCM_16")


def below_16_bit_wav(root: Path) -> None:
    """Nonzero 24-bit samples that are all zero at the 16-bit resolution the front end reads."""
    sf.write(root / "Set1" / "003.wav", np.full(22050 * 2, 2e-6), 22050, subtype="PCM_24")


def second_extension(root: Path) -> None:
    write_wav(root / "Set1" / "002.flac")


def unpadded_audio(root: Path) -> None:
    (root / "Set1" / "005.wav").rename(root / "Set1" / "5.wav")


# (case id, how to break the dataset, substrings the message must contain)
FAILURES = [
    ("ratings_missing_file", lambda r: (r / RAT).unlink(), [RAT, "not found"]),
    ("annotations_missing_file", lambda r: (r / ANN).unlink(), ["annotations.csv", "not found"]),
    ("ratings_missing_column", drop_column(RAT, 8), [RAT, "missing column", "'tender'", "found"]),
    ("annotations_missing_column", drop_column(ANN, 7), ["annotations.csv", "'minorness'"]),
    ("metadata_missing_column", drop_column(META, 1, ";"), ["metadata.csv", "'Source'"]),
    ("ratings_extra_column", lambda r: edit_csv(
        r / RAT, lambda rows: [x.append("note") for x in rows]), [RAT, "unexpected column 'note'"]),
    ("ratings_unnamed_values", lambda r: edit_csv(
        r / RAT, lambda rows: [x.append("") for x in rows[:2]] + [x.append("7") for x in rows[2:]]),
     [RAT, "line 3", "no header name"]),
    ("ratings_duplicated_id", append_row(RAT, ["2", *["5"] * 8, "SAD"]),
     [RAT, "duplicated number 2", "lines 5 and 7"]),
    ("metadata_duplicated_id", append_row(META, ["4000", "soundtracks", "3", "", "", ""], ";"),
     ["metadata.csv", "duplicated 'ID at file source'", "3"]),
    ("metadata_duplicated_song", append_row(META, ["18", "soundtracks", "7", "", "", ""], ";"),
     ["metadata.csv", "duplicated song id", "18"]),
    ("annotations_duplicated_id", append_row(ANN, ["950", *["5"] * 7]),
     ["annotations.csv", "duplicated song_id 950"]),
    ("id_only_in_ratings", drop_row(META, "600", ";"),
     [RAT, "metadata.csv", "in the ratings only: [12]", "mid-level annotations only: []"]),
    ("id_only_in_midlevel", drop_row(RAT, "012"), [RAT, "in the mid-level annotations only: [12]"]),
    ("song_without_annotation", drop_row(ANN, "950"),
     ["annotations.csv", "no annotation row", "950 (Set-1 number 3)"]),
    ("ratings_non_numeric", set_cell(RAT, 2, 3, "n/a"),
     [RAT, "line 3", "'tension'", "not a number: 'n/a'"]),
    ("ratings_out_of_range", set_cell(RAT, 4, 1, "9.50"), [RAT, "line 5", "'valence'", "[1, 9]"]),
    ("ratings_empty_value", set_cell(RAT, 1, 8, ""), [RAT, "line 2", "'tender'", "empty value"]),
    ("ratings_nan", set_cell(RAT, 1, 2, "NaN"), [RAT, "line 2", "'energy'", "finite"]),
    ("ratings_non_integer_id", set_cell(RAT, 3, 0, "2.5"), [RAT, "line 4", "integer ID", "'2.5'"]),
    ("annotations_non_numeric", set_cell(ANN, 3, 2, "abc"), ["annotations.csv", "line 4", "abc"]),
    ("annotations_out_of_range", set_cell(ANN, 4, 7, "10.5"),
     ["annotations.csv", "line 5", "'minorness'", "[1, 10]"]),
    ("metadata_non_integer_id", set_cell(META, 5, 2, "x7", ";"),
     ["metadata.csv", "line 6", "'ID at file source'", "'x7'"]),
    ("audio_missing", lambda r: (r / "Set1" / "003.wav").unlink(), ["Set1", "003", "no audio file"]),
    ("audio_unpadded", unpadded_audio, ["Set1", "005", "zero padding"]),
    ("audio_two_extensions", second_extension, ["Set1", "002.flac and 002.wav"]),
    ("audio_garbage", garbage_wav, ["003.wav", "unreadable"]),
    ("audio_empty", empty_wav, ["003.wav", "unreadable"]),
    ("audio_cut_to_2000_bytes", cut_wav,
     ["1 of 5 audio file(s) cannot be used", "Set1/003.wav: its header promises 26460 frames (1.20 s) but it "
      "holds only 978 (0.04 s): the file is cut short", "shorter than the minimum of 1 s"]),
    ("audio_cut_but_long", cut_long_wav,
     ["Set1/003.wav: its header promises 66150 frames (3.00 s) but it holds only 44100 (2.00 s)"]),
    ("audio_100_samples", lambda r: write_wav(r / "Set1" / "003.wav", 100 / 22050),
     ["Set1/003.wav: 0.005 s long (100 frames at 22050 Hz): shorter than the minimum of 1 s"]),
    ("audio_non_finite", nan_wav,
     ["Set1/003.wav: 3 non-finite sample(s) (NaN or infinity), the first at 0.005 s (expected finite audio)"]),
    ("audio_silent", silent_wav, ["Set1/003.wav: silent: every sample is zero at 16-bit resolution"]),
    ("audio_silent_at_16_bit", below_16_bit_wav, ["Set1/003.wav: silent"]),
    ("audio_silent_float", lambda r: sf.write(r / "Set1" / "003.wav", np.zeros(30000), 22050, subtype="FLOAT"),
     ["Set1/003.wav: silent: every sample is zero"]),
]


@pytest.mark.parametrize("breakage, expected", [pytest.param(b, e, id=i) for i, b, e in FAILURES])
def test_failures(data_dir: Path, breakage: Callable[[Path], object], expected: list[str]) -> None:
    breakage(data_dir)
    with pytest.raises(MerError) as info:
        load_soundtracks(data_dir)
    message = str(info.value)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_every_bad_audio_file_in_one_error(data_dir: Path) -> None:
    cut_wav(data_dir)
    silent_wav_at = data_dir / "Set1" / "005.wav"
    sf.write(silent_wav_at, np.zeros(30000), 22050, subtype="PCM_16")
    write_wav(data_dir / "Set1" / "001.wav", 0.5)
    with pytest.raises(MerError) as info:
        load_soundtracks(data_dir)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("3 of 5 audio file(s) cannot be used")
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [
        str(data_dir / "Set1" / f"{n}.wav") for n in ("001", "003", "005")]
    assert "0.500 s long" in lines[1] and "cut short" in lines[2] and "silent" in lines[3]


def test_valid_audio_variants_are_accepted(data_dir: Path) -> None:
    """Float, 24-bit and stereo files, a WAV with a chunk after its data, and a file exactly 1 s long."""
    write_wav(data_dir / "Set1" / "001.wav", 1.5, subtype="FLOAT")
    write_wav(data_dir / "Set1" / "002.wav", 1.0, subtype="PCM_24")
    sf.write(data_dir / "Set1" / "003.wav", np.stack([tone(2.0), np.zeros(44100)], axis=1), 22050)
    path = data_dir / "Set1" / "005.wav"
    raw = bytearray(path.read_bytes()) + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    raw[4:8] = (len(raw) - 8).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    check_valid(load_soundtracks(data_dir))


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3 support")
def test_mp3_cut_short(data_dir: Path) -> None:
    (data_dir / "Set1" / "003.wav").unlink()
    mp3 = data_dir / "Set1" / "003.mp3"
    sf.write(mp3, tone(3.0), 22050, format="MP3", subtype="MPEG_LAYER_III")
    check_valid(load_soundtracks(data_dir))  # an intact MP3 holds what its header promises
    mp3.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    with pytest.raises(MerError, match=r"003\.mp3: its header promises 66150 frames .* cut short"):
        load_soundtracks(data_dir)


def test_unreadable_audio_is_not_opened_without_check(data_dir: Path) -> None:
    garbage_wav(data_dir)
    check_valid(load_soundtracks(data_dir, check_audio=False))


def test_wrong_separator_is_explained(data_dir: Path) -> None:
    rows = read_csv(data_dir / META, ";")
    write_csv(data_dir / META, rows, delimiter=",")
    with pytest.raises(MerError, match="semicolon separated"):
        read_midlevel(data_dir / "metadata_annotations")


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(MerError, match="data directory not found"):
        load_soundtracks(tmp_path / "nope")


def test_data_dir_none_needs_every_path(data_dir: Path) -> None:
    with pytest.raises(MerError, match="data_dir is None, so ratings_csv, annotations_dir and audio_dir"):
        load_soundtracks(None, ratings_csv=data_dir / RAT, audio_dir=data_dir / "Set1")


def test_explicit_paths_need_no_data_dir(data_dir: Path, tmp_path: Path) -> None:
    df = load_soundtracks(tmp_path / "nope", ratings_csv=data_dir / RAT,
                          annotations_dir=data_dir / "metadata_annotations", audio_dir=data_dir / "Set1")
    check_valid(df)
    assert df.attrs["audio_dir"] == str(data_dir / "Set1")
