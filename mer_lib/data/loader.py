"""Loaders for the real datasets: Soundtracks Set 1 and its mid-level features (protocol §2.1).

Neither dataset ships with ``mer_lib``. Layout (``data_dir`` of :func:`load_soundtracks`, whose ``ratings_csv=``,
``annotations_dir=`` and ``audio_dir=`` override each part)::

    data_dir/
        Set1/001.mp3 ... Set1/360.mp3       audio (.mp3, .wav or .flac)
        mean_ratings_set1.csv               Soundtracks Set-1 mean ratings
        metadata_annotations/
            metadata.csv                    mid-level metadata (semicolon separated)
            annotations.csv                 mid-level annotations (comma separated)

Format variants are accepted (byte-order mark, ``001`` or ``1``, column names in any case or spacing, empty
unnamed columns, blank lines); an unexpected ratings column is an error, other files' extra columns are ignored.

Every problem raises :class:`~mer_lib.errors.MerError` naming the file and what was expected; no row is dropped
silently; audio files without a rating are only listed in ``df.attrs["unrated_audio"]``. The audio checks
(``check_audio=True``) refuse, all in one error, files that are unreadable or empty, hold fewer frames than their
header promises (MP3: over 1 % fewer), hold NaN or infinity, are silent (integer files: at 16-bit resolution) or
last less than :data:`MIN_AUDIO_SECONDS`. A file shorter than the 10-s excerpt is valid (protocol §3).
"""
from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import soundfile as sf

from mer_lib.config import EMOTION_RANGE, EMOTIONS, MIDLEVEL, MIDLEVEL_RANGE, TARGET_SCALE
from mer_lib.data.layout import (
    ANNOTATIONS_FILE,
    ANNOTATIONS_SUBDIR,
    AUDIO_EXTENSIONS,
    AUDIO_SUBDIR,
    METADATA_FILE,
    RATINGS_FILE,
    SOUNDTRACKS_SOURCE,
    annotations_folder,
    audio_folder,
    audio_stem,
    ratings_path,
)
from mer_lib.errors import MerError

_MAX_LISTED = 10


#: Shortest audio file accepted (seconds); anything shorter is an error, not an excerpt.
MIN_AUDIO_SECONDS = 1.0


#: Subtypes read as float32 (to see NaN/infinity); every other file is read as int16.
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})


#: Formats whose header frame count is an estimate: the tolerated shortfall, as a fraction.
_ESTIMATED_LENGTH_TOLERANCE = {"MP3": 0.01}


_INT_RE = re.compile(r"^\+?(\d+)(?:\.0*)?$")


_UNNAMED_RE = re.compile(r"^unnamed:_?\d+$")


# --------------------------------------------------------------------------- helpers
def _norm(name: str) -> str:
    """Normalise a column name: strip, lower-case, spaces/underscores -> ``_``."""
    return re.sub(r"[\s_]+", "_", name.strip().lower())


def _listing(items: Iterable[object], limit: int = _MAX_LISTED, sep: str = ", ") -> str:
    """Listing of at most ``limit`` items joined by ``sep``, with a count of the rest."""
    items = list(items)
    text = sep.join(str(i) for i in items[:limit])
    if len(items) > limit:
        text += f"{sep}... ({len(items) - limit} more)"
    return text


@dataclass
class _Table:
    """A delimited text file: header cells and the data rows with their line numbers."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]


def _decode(raw: bytes) -> str:
    """Decode file bytes: UTF-16 if it has a UTF-16 BOM, else UTF-8 (BOM optional), else Latin-1."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Only the numeric ID and value columns are used, so a legacy 8-bit
        # encoding of free-text columns (titles, artists) is harmless.
        return raw.decode("latin-1")


def _read_table(path: str | os.PathLike, delimiter: str, what: str) -> _Table:
    """Read a delimited text file; blank lines are skipped, short rows padded with ``""``."""
    path = Path(path)
    if not path.exists():
        raise MerError(f"{what} file not found: {path}")
    if not path.is_file():
        raise MerError(f"{what} path is not a file: {path}")
    try:
        text = _decode(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        raise MerError(f"{path}: cannot read the {what} file ({exc})") from exc
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # an empty line (or a line of empty cells) is not a data row
            if header is None:
                header = row
            else:
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise MerError(f"{path}, line {reader.line_num}: malformed {what} file ({exc})") from exc
    if header is None:
        raise MerError(f"{path}: the {what} file is empty (expected a header line and data rows)")
    width = len(header)
    rows = [(line, row + [""] * (width - len(row))) for line, row in rows]
    return _Table(path, header, rows)


def _columns(
    table: _Table,
    required: Sequence[str],
    optional: Sequence[str] = (),
    *,
    extra: str = "ignore",
    delimiter: str = ",",
) -> dict[str, int]:
    """Canonical column name -> index in ``table``; ``extra="reject"`` refuses unknown names; unnamed must be empty."""
    path = table.path
    found = [h.strip() for h in table.header]
    norm = [_norm(h) for h in table.header]
    wanted = {_norm(name): name for name in (*required, *optional)}
    expected = ", ".join([*required, *(f"{o} (optional)" for o in optional)])

    def header_error(problem: str) -> MerError:
        msg = (f"{path}: {problem}. Columns found: {found}; expected: {expected}")
        if len(found) == 1:
            for other in (",", ";", "\t"):
                if other != delimiter and other in found[0]:
                    sep = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
                    msg += f" (the file must be {sep} separated)"
                    break
        return MerError(msg)

    index: dict[str, int] = {}
    for i, key in enumerate(norm):
        if key in wanted:
            if wanted[key] in index:
                raise header_error(f"column '{wanted[key]}' appears more than once")
            index[wanted[key]] = i
    missing = [name for name in required if name not in index]
    if missing:
        raise header_error(f"missing column(s) {', '.join(repr(m) for m in missing)}")

    used = set(index.values())
    for i, key in enumerate(norm):
        if i in used:
            continue
        if key == "" or _UNNAMED_RE.match(key):
            for line, row in table.rows:
                if row[i].strip():
                    raise MerError(
                        f"{path}, line {line}: column {i + 1} has no header name but "
                        f"holds {row[i]!r} (only empty unnamed columns are allowed). "
                        f"Columns found: {found}; expected: {expected}")
        elif extra == "reject":
            raise header_error(f"unexpected column '{found[i]}'")
    # Rows longer than the header may only carry empty cells (trailing delimiters).
    width = len(table.header)
    for line, row in table.rows:
        if any(cell.strip() for cell in row[width:]):
            raise MerError(
                f"{path}, line {line}: {len(row)} fields but the header has {width} "
                f"(extra values {[c for c in row[width:] if c.strip()]})")
    return index


def _parse_id(text: str, path: Path, line: int, column: str) -> int:
    """Parse an integer ID (``001``, ``1`` or ``1.0``); anything else is an error."""
    text = text.strip()
    where = f"{path}, line {line}, column '{column}'"
    if not text:
        raise MerError(f"{where}: empty value (expected an integer ID)")
    match = _INT_RE.match(text)
    if match is None:
        raise MerError(f"{where}: expected an integer ID, found {text!r}")
    value = int(match.group(1))
    if value < 1:
        raise MerError(f"{where}: IDs start at 1, found {text!r}")
    return value


def _parse_value(text: str, path: Path, line: int, column: str,
                 bounds: tuple[float, float]) -> float:
    """Parse a rating and check that it lies within ``bounds`` (inclusive)."""
    lo, hi = bounds
    expect = f"expected a number in [{lo:g}, {hi:g}]"
    where = f"{path}, line {line}, column '{column}'"
    text = text.strip()
    if not text:
        raise MerError(f"{where}: empty value ({expect})")
    try:
        value = float(text)
    except ValueError:
        raise MerError(f"{where}: not a number: {text!r} ({expect})") from None
    if not math.isfinite(value):
        raise MerError(f"{where}: {text!r} is not a finite number ({expect})")
    if not lo <= value <= hi:
        raise MerError(f"{where}: value {text} out of range ({expect})")
    return value


def _check_unique(ids: list[tuple[int, int]], path: Path, label: str, scope: str = "") -> None:
    """Raise if an ID occurs twice; ``ids`` holds ``(id, line)`` pairs."""
    first: dict[int, int] = {}
    for value, line in ids:
        if value in first:
            raise MerError(
                f"{path}: duplicated {label} {value} on lines {first[value]} and {line} "
                f"(each {label} must appear once{scope})")
        first[value] = line


def _abspath(path: Path) -> Path:
    """Absolute, normalised path without resolving symbolic links."""
    return Path(os.path.abspath(path))


# --------------------------------------------------------------------------- ratings
def read_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """Read the Soundtracks Set-1 mean ratings from ``path`` (``mean_ratings_set1.csv``, comma separated).

    Returns
    -------
    pandas.DataFrame
        Raw 1-9 ratings, one float64 column per emotion of :data:`~mer_lib.config.EMOTIONS`, indexed by the int
        Set-1 ``number`` (ascending). ``attrs["source"]`` is the file path.

    Raises
    ------
    MerError
        On a missing or empty file, a missing or unexpected column, a non-integer or duplicated number, or a rating
        that is empty, non-numeric or outside [1, 9].
    """
    table = _read_table(path, ",", "Soundtracks ratings")
    cols = _columns(table, ("number", *EMOTIONS), ("TARGET",), extra="reject")
    if not table.rows:
        raise MerError(f"{table.path}: the Soundtracks ratings file has a header but no data rows")
    numbers: list[tuple[int, int]] = []
    values: list[list[float]] = []
    for line, row in table.rows:
        number = _parse_id(row[cols["number"]], table.path, line, "number")
        numbers.append((number, line))
        values.append([_parse_value(row[cols[e]], table.path, line, e, EMOTION_RANGE)
                       for e in EMOTIONS])
    _check_unique(numbers, table.path, "number")
    df = pd.DataFrame(values, columns=list(EMOTIONS), dtype="float64",
                      index=pd.Index([n for n, _ in numbers], dtype="int64", name="number"))
    df = df.sort_index()
    df.attrs["source"] = str(_abspath(table.path))
    return df


# --------------------------------------------------------------------------- mid-level
def _read_metadata(path: Path) -> tuple[dict[int, tuple[int, int]], _Table]:
    """Soundtracks rows of ``metadata.csv``: song id -> (Set-1 number, line)."""
    table = _read_table(path, ";", "mid-level metadata")
    cols = _columns(table, ("song id", "Source", "ID at file source"), delimiter=";")
    songs: dict[int, tuple[int, int]] = {}
    song_lines: list[tuple[int, int]] = []
    number_lines: list[tuple[int, int]] = []
    sources: set[str] = set()
    for line, row in table.rows:
        source = row[cols["Source"]].strip()
        sources.add(source)
        if source.lower() != SOUNDTRACKS_SOURCE:
            continue
        song = _parse_id(row[cols["song id"]], path, line, "song id")
        number = _parse_id(row[cols["ID at file source"]], path, line, "ID at file source")
        song_lines.append((song, line))
        number_lines.append((number, line))
        songs[song] = (number, line)
    if not song_lines:
        raise MerError(
            f"{path}: no row has Source == '{SOUNDTRACKS_SOURCE}' (sources found: "
            f"{_listing(sorted(sources)) or 'none'})")
    _check_unique(song_lines, path, "song id", " among the soundtracks rows")
    _check_unique(number_lines, path, "'ID at file source'", " among the soundtracks rows")
    return songs, table


def _read_midlevel_files(metadata_csv: str | os.PathLike,
                         annotations_csv: str | os.PathLike) -> pd.DataFrame:
    """Join ``annotations.csv`` to the soundtracks rows of ``metadata.csv`` by song id."""
    metadata_csv, annotations_csv = Path(metadata_csv), Path(annotations_csv)
    songs, _ = _read_metadata(metadata_csv)
    table = _read_table(annotations_csv, ",", "mid-level annotations")
    cols = _columns(table, ("song_id", *MIDLEVEL))
    rows_by_song: dict[int, tuple[int, list[str]]] = {}
    song_lines: list[tuple[int, int]] = []
    for line, row in table.rows:
        song = _parse_id(row[cols["song_id"]], annotations_csv, line, "song_id")
        song_lines.append((song, line))
        rows_by_song[song] = (line, row)
    _check_unique(song_lines, annotations_csv, "song_id")

    unannotated = sorted(song for song in songs if song not in rows_by_song)
    if unannotated:
        described = [f"{s} (Set-1 number {songs[s][0]})" for s in unannotated]
        raise MerError(
            f"{annotations_csv}: no annotation row for {len(unannotated)} soundtracks "
            f"song id(s) of {metadata_csv}: {_listing(described)}")

    numbers: list[int] = []
    values: list[list[float]] = []
    for song, (number, _) in songs.items():
        line, row = rows_by_song[song]
        numbers.append(number)
        values.append([_parse_value(row[cols[f]], annotations_csv, line, f, MIDLEVEL_RANGE)
                       for f in MIDLEVEL])
    df = pd.DataFrame(values, columns=list(MIDLEVEL), dtype="float64",
                      index=pd.Index(numbers, dtype="int64", name="number"))
    df = df.sort_index()
    df.attrs["metadata_csv"] = str(_abspath(metadata_csv))
    df.attrs["annotations_csv"] = str(_abspath(annotations_csv))
    return df


def read_midlevel(annotations_dir: str | os.PathLike) -> pd.DataFrame:
    """Read the mid-level features of the Soundtracks excerpts from the ``metadata_annotations`` folder.

    Returns
    -------
    pandas.DataFrame
        Raw 1-10 values, one float64 column per feature of :data:`~mer_lib.config.MIDLEVEL`, indexed by the int
        Set-1 ``number`` (ascending). ``attrs`` records the two file paths.

    Raises
    ------
    MerError
        On a missing file or column, no ``soundtracks`` row, a non-integer or duplicated ID, a soundtracks song
        without annotations, or a value that is empty, non-numeric or outside [1, 10].
    """
    folder = Path(annotations_dir)
    if not folder.is_dir():
        raise MerError(
            f"mid-level annotations folder not found: {folder} (expected a folder "
            f"holding {METADATA_FILE} and {ANNOTATIONS_FILE})")
    return _read_midlevel_files(folder / METADATA_FILE, folder / ANNOTATIONS_FILE)


# --------------------------------------------------------------------------- audio
def _audio_files(audio_dir: Path) -> dict[str, list[Path]]:
    """Audio files of ``audio_dir`` grouped by file stem."""
    if not audio_dir.is_dir():
        raise MerError(
            f"audio folder not found: {audio_dir} (expected the Soundtracks Set-1 excerpts "
            f"as NNN{'|'.join(AUDIO_EXTENSIONS)})")
    files: dict[str, list[Path]] = {}
    for entry in sorted(audio_dir.iterdir()):
        if entry.suffix.lower() in AUDIO_EXTENSIONS and entry.is_file():
            files.setdefault(entry.stem, []).append(entry)
    return files


def _wav_header_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE ``data`` chunk declares, or ``None`` (libsndfile silently shortens a cut-off WAV)."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while len(chunk := fh.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"fmt ":
                body = fh.read(size + (size & 1))
                block_align = int.from_bytes(body[12:14], "little")
            elif chunk[:4] == b"data":
                # 0 and 0xFFFFFFFF: a streaming writer that never filled in the size
                return size // block_align if block_align and size not in (0, 0xFFFFFFFF) else None
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _shortfall_problem(promised: int, held: int, rate: int, file_format: str) -> str | None:
    """The complaint about a file holding fewer frames than its header promises, if it does."""
    if promised - held <= _ESTIMATED_LENGTH_TOLERANCE.get(file_format, 0.0) * promised:
        return None
    return (f"its header promises {promised} frames ({promised / rate:.2f} s) but it holds only "
            f"{held} ({held / rate:.2f} s): the file is cut short (an interrupted copy?); "
            f"copy it again")


def _audio_problems(path: Path) -> list[str]:
    """Everything wrong with the audio file ``path`` (empty if nothing), decoding it once."""
    try:
        info = sf.info(str(path))
        if info.frames <= 0:
            return ["unreadable: the file contains no audio frames"]
        dtype = "float32" if info.subtype in _FLOAT_SUBTYPES else "int16"
        samples = sf.read(str(path), dtype=dtype, always_2d=True)[0]
        promised = _wav_header_frames(path) or info.frames
    except Exception as exc:  # libsndfile raises several error types
        return [f"unreadable: soundfile cannot decode it ({str(exc) or type(exc).__name__})"]
    problems = []
    held, rate = samples.shape[0], info.samplerate
    shortfall = _shortfall_problem(promised, held, rate, info.format)
    if shortfall is not None:
        problems.append(shortfall)
    finite = np.isfinite(samples)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        problems.append(f"{int((~finite).sum())} non-finite sample(s) (NaN or infinity), the first at "
                        f"{first / rate:.3f} s (expected finite audio)")
    elif not samples.any():
        problems.append("silent: every sample is zero" + ("" if dtype == "float32" else " at 16-bit resolution"))
    if held < MIN_AUDIO_SECONDS * rate:
        problems.append(f"{held / rate:.3f} s long ({held} frames at {rate} Hz): shorter than the "
                        f"minimum of {MIN_AUDIO_SECONDS:g} s")
    return problems


# --------------------------------------------------------------------------- dataset
def _dataset_paths(data_dir: str | os.PathLike | None, ratings_csv: str | os.PathLike | None,
                   annotations_dir: str | os.PathLike | None,
                   audio_dir: str | os.PathLike | None) -> tuple[Path, Path, Path]:
    """The ratings file, annotations folder and audio folder: the given ones, else those of ``data_dir``."""
    root = Path(data_dir) if data_dir is not None else None
    if root is None and None in (ratings_csv, annotations_dir, audio_dir):
        raise MerError(
            "load_soundtracks: data_dir is None, so ratings_csv, annotations_dir and "
            "audio_dir must all be given")
    if root is not None and not root.is_dir() and None in (ratings_csv, annotations_dir, audio_dir):
        raise MerError(
            f"data directory not found: {root} (expected {AUDIO_SUBDIR}/, {RATINGS_FILE} and "
            f"{ANNOTATIONS_SUBDIR}/ inside it)")
    return (Path(ratings_csv) if ratings_csv is not None else ratings_path(root),
            Path(annotations_dir) if annotations_dir is not None else annotations_folder(root),
            Path(audio_dir) if audio_dir is not None else audio_folder(root))


def _check_same_numbers(ratings: pd.DataFrame, midlevel: pd.DataFrame, ratings_file: Path,
                        midlevel_dir: Path) -> None:
    """Raise unless the ratings and the mid-level annotations hold the same Set-1 numbers."""
    only_ratings = sorted(set(ratings.index) - set(midlevel.index))
    only_mid = sorted(set(midlevel.index) - set(ratings.index))
    if only_ratings or only_mid:
        raise MerError(
            f"the ratings ({ratings_file}) and the mid-level annotations "
            f"({midlevel_dir / METADATA_FILE}, soundtracks rows) do not cover the same "
            f"Soundtracks numbers: in the ratings only: [{_listing(only_ratings)}]; "
            f"in the mid-level annotations only: [{_listing(only_mid)}]")


def _match_audio(numbers: list[int], files: dict[str, list[Path]], set1_dir: Path) -> list[Path]:
    """The one audio file of each number (absolute), or an error naming the missing or doubled ones."""
    missing = [n for n in numbers if audio_stem(n) not in files]
    if missing:
        msg = (f"{set1_dir}: no audio file for {len(missing)} rated Soundtracks "
               f"number(s): {_listing(audio_stem(n) for n in missing)} (expected NNN.mp3, "
               f"NNN.wav or NNN.flac)")
        unpadded = [files[str(n)][0].name for n in missing if str(n) in files]
        if unpadded:
            msg += (f"; found files without zero padding ({_listing(unpadded, 3)}): "
                    f"rename them to three digits, e.g. 001.mp3")
        raise MerError(msg)
    several = [n for n in numbers if len(files[audio_stem(n)]) > 1]
    if several:
        described = [" and ".join(p.name for p in files[audio_stem(n)]) for n in several]
        raise MerError(
            f"{set1_dir}: several audio files for the same Soundtracks number: "
            f"{_listing(described)} (keep exactly one per number)")
    return [_abspath(files[audio_stem(n)][0]) for n in numbers]


def _check_audio(paths: list[Path]) -> None:
    """Decode every file of ``paths``; one error listing every problem of every file."""
    bad = [(p, problems) for p in paths if (problems := _audio_problems(p))]
    if bad:
        raise MerError(
            f"{len(bad)} of {len(paths)} audio file(s) cannot be used (unreadable, cut short, "
            f"with non-finite samples, silent or shorter than {MIN_AUDIO_SECONDS:g} s):\n  "
            + _listing((f"{p}: {'; '.join(problems)}" for p, problems in bad), sep="\n  "))


def _unrated_audio(files: dict[str, list[Path]], numbers: list[int]) -> list[str]:
    """Absolute paths of the audio files whose stem is not a rated number, sorted."""
    rated = {audio_stem(n) for n in numbers}
    return sorted(str(_abspath(p)) for stem, group in files.items() if stem not in rated for p in group)


def load_soundtracks(
    data_dir: str | os.PathLike | None,
    *,
    ratings_csv: str | os.PathLike | None = None,
    annotations_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    check_audio: bool = True,
) -> pd.DataFrame:
    """Load Soundtracks Set 1 with its emotion ratings and mid-level features.

    Parameters
    ----------
    data_dir : path-like or None
        Root of the layout in the module docstring; ``None`` only if the three overrides are given.
    ratings_csv, annotations_dir, audio_dir : path-like, optional
        Override ``data_dir/mean_ratings_set1.csv``, ``data_dir/metadata_annotations`` and ``data_dir/Set1``.
    check_audio : bool, default True
        Run the audio checks of the module docstring; ``False`` only checks that the files exist.

    Returns
    -------
    pandas.DataFrame
        Indexed by the int Set-1 ``number`` (ascending): ``audio_path`` (absolute, str), then the 8
        :data:`~mer_lib.config.EMOTIONS` and 7 :data:`~mer_lib.config.MIDLEVEL` columns divided by
        :data:`~mer_lib.config.TARGET_SCALE` (float64). ``attrs``: ``ratings_csv``, ``metadata_csv``,
        ``annotations_csv``, ``audio_dir``, ``target_scale`` and ``unrated_audio`` (audio files not loaded).

    Raises
    ------
    MerError
        On any problem of the module docstring, e.g. IDs in only one of ratings and annotations, a missing or
        doubled audio file, or audio failing the checks.
    """
    ratings_file, midlevel_dir, set1_dir = _dataset_paths(data_dir, ratings_csv, annotations_dir, audio_dir)
    ratings = read_ratings(ratings_file)
    midlevel = read_midlevel(midlevel_dir)
    _check_same_numbers(ratings, midlevel, ratings_file, midlevel_dir)

    numbers = [int(n) for n in ratings.index]
    files = _audio_files(set1_dir)
    paths = _match_audio(numbers, files, set1_dir)
    if check_audio:
        _check_audio(paths)

    df = pd.concat([ratings.loc[numbers] / TARGET_SCALE, midlevel.loc[numbers] / TARGET_SCALE],
                   axis=1).astype("float64")
    df.insert(0, "audio_path", [str(p) for p in paths])
    df.index = pd.Index(numbers, dtype="int64", name="number")
    df.attrs = {
        "ratings_csv": str(_abspath(ratings_file)),
        "metadata_csv": str(_abspath(midlevel_dir / METADATA_FILE)),
        "annotations_csv": str(_abspath(midlevel_dir / ANNOTATIONS_FILE)),
        "audio_dir": str(_abspath(set1_dir)),
        "target_scale": float(TARGET_SCALE),
        "unrated_audio": _unrated_audio(files, numbers),
    }
    return df
