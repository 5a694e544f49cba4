"""Attack logs in the published format (reference ``log.csv``) and as tidy tables.

The authors released one ``log.csv`` per attacked model (36 test excerpts):

======================  ===================================================
column                  content
======================  ===================================================
``file``                excerpt id as a Python list repr, ``['146.mp3.spec']``
``epoch``               attack iterations run
``db``                  the reference's pseudo-SNR (not a true SNR)
``norm``                L2 norm of the stored perturbation
``converged``           ``True``/``False``
``true-label``          8 ratings / 10, numpy repr ``[[a b ...]]``
``orig-pred``           clean predictions, same encoding (may wrap lines)
``new-pred``            predictions at the attack's last iterate
``adv-target``          correlation threshold when the attack stopped
======================  ===================================================

:func:`read_attack_log` turns such a file (the authors' or the project's) into a
tidy table with one row per excerpt and one column per value
(``true_valence`` ... ``new_tender``); :func:`write_attack_log` writes a tidy
table back in the published format, so that a round trip is lossless for
float32 predictions.
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib import artifacts
from mer_lib.constants import EMOTIONS
from mer_lib.errors import MerError

LOG_COLUMNS: tuple[str, ...] = ("file", "epoch", "db", "norm", "converged", "true-label",
                                "orig-pred", "new-pred", "adv-target")
#: Array columns of the published format -> prefix of their tidy columns.
ARRAY_PREFIXES: dict[str, str] = {"true-label": "true", "orig-pred": "orig", "new-pred": "new"}
SCALAR_COLUMNS: dict[str, str] = {"epoch": "iterations", "db": "db_reference", "norm": "norm",
                                  "converged": "converged", "adv-target": "adv_target"}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", re.IGNORECASE)


def tidy_columns(prefix: str) -> list[str]:
    """``[prefix_valence, ..., prefix_tender]``."""
    return [f"{prefix}_{e}" for e in EMOTIONS]


def parse_array(text: str, where: str = "") -> np.ndarray:
    """Parse numpy's printed form of a 1 x 8 array (``[[a b ...]]``, possibly wrapped)."""
    values = _NUMBER.findall(text)
    stripped = re.sub(r"[\[\]\s]", "", _NUMBER.sub("", text))
    if stripped or len(values) != len(EMOTIONS):
        raise MerError(f"{where}: expected an array of {len(EMOTIONS)} numbers like '[[0.1 0.2 ...]]', "
                       f"got {text!r}")
    return np.array([float(v) for v in values], dtype=np.float64)


def format_array(values: np.ndarray, dtype=np.float32) -> str:
    """numpy's printed form of a ``(1, 8)`` array, as the reference writes it."""
    return str(np.asarray(values, dtype=dtype).reshape(1, -1))


def parse_file_id(text: str, where: str = "") -> int:
    """``"['146.mp3.spec']"`` (or ``"146"``) -> 146."""
    try:
        value = ast.literal_eval(text) if text.strip().startswith("[") else text
        name = value[0] if isinstance(value, list) else value
        return int(str(name).split(".")[0])
    except (ValueError, SyntaxError, IndexError, TypeError):
        raise MerError(f"{where}: cannot read an excerpt id from {text!r}; expected e.g. \"['146.mp3.spec']\"") from None


def read_attack_log(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``log.csv`` (published or the project's) into a tidy table.

    Returns
    -------
    pandas.DataFrame
        One row per excerpt, in file order: ``number``, ``iterations``,
        ``db_reference``, ``norm``, ``converged`` (bool), ``adv_target`` and the
        24 columns ``true_*``, ``orig_*``, ``new_*`` (emotion order of
        :data:`mer_lib.constants.EMOTIONS`).

    Raises
    ------
    MerError
        Naming the file, row and column of anything unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise MerError(f"{path}: attack log not found")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in LOG_COLUMNS if c not in raw.columns]
    if missing:
        raise MerError(f"{path}: missing columns {missing}; found {list(raw.columns)}")
    rows = []
    for i, rec in enumerate(raw.to_dict("records"), start=2):  # line 1 is the header
        where = f"{path}, row {i}"
        row: dict = {"number": parse_file_id(rec["file"], f"{where}, column 'file'")}
        for col, name in SCALAR_COLUMNS.items():
            text = rec[col].strip()
            if col == "converged":
                if text not in ("True", "False"):
                    raise MerError(f"{where}, column 'converged': expected True or False, got {text!r}")
                row[name] = text == "True"
            else:
                try:
                    row[name] = int(text) if col == "epoch" else float(text)
                except ValueError:
                    raise MerError(f"{where}, column {col!r}: not a number: {text!r}") from None
        for col, prefix in ARRAY_PREFIXES.items():
            row.update(zip(tidy_columns(prefix), parse_array(rec[col], f"{where}, column {col!r}")))
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["source"] = str(path)
    return out


def to_published_format(tidy: pd.DataFrame, file_suffix: str = ".mp3.spec") -> pd.DataFrame:
    """A tidy table as the columns of the published ``log.csv`` (strings)."""
    out = pd.DataFrame({"file": [f"['{int(n):03d}{file_suffix}']" for n in tidy["number"]]})
    out["epoch"] = tidy["iterations"].astype(int).astype(str).to_numpy()
    out["db"] = [repr(float(np.float32(v))) for v in tidy["db_reference"]]
    out["norm"] = [repr(float(v)) for v in tidy["norm"]]
    out["converged"] = ["True" if v else "False" for v in tidy["converged"]]
    out["true-label"] = [format_array(r, np.float64) for r in tidy[tidy_columns("true")].to_numpy()]
    out["orig-pred"] = [format_array(r) for r in tidy[tidy_columns("orig")].to_numpy()]
    out["new-pred"] = [format_array(r) for r in tidy[tidy_columns("new")].to_numpy()]
    out["adv-target"] = [repr(float(v)) for v in tidy["adv_target"]]
    return out


def write_attack_log(tidy: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Atomically write a tidy attack table as a published-format ``log.csv``."""
    return artifacts.write_text(path, to_published_format(tidy).to_csv(index=False))


def read_published_runs(folder: str | os.PathLike, runs_csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """All attack logs of a folder of runs, with their system and seed.

    Parameters
    ----------
    folder : path-like
        A folder of run directories, each holding a ``log.csv`` (e.g.
        ``reference/published_runs`` in the repository or the reference repository's
        ``runs/adversaries``).
    runs_csv : path-like, optional
        ``system,seed,run_dir`` table naming every run (default:
        ``folder/runs.csv``). The logs themselves do not say which system
        produced them (``hparams.yaml`` names only the architecture), so this
        table is required.

    Returns
    -------
    pandas.DataFrame
        The tidy rows of every log with ``system``, ``seed`` and ``run_dir``
        columns prepended.
    """
    folder = Path(folder)
    runs_csv = Path(runs_csv) if runs_csv else folder / "runs.csv"
    if not runs_csv.is_file():
        raise MerError(f"{runs_csv}: not found; a 'system,seed,run_dir' table naming every run is needed "
                       "(the logs do not record which system produced them)")
    runs = pd.read_csv(runs_csv, dtype={"system": str, "seed": int, "run_dir": str})
    missing = {"system", "seed", "run_dir"} - set(runs.columns)
    if missing:
        raise MerError(f"{runs_csv}: missing columns {sorted(missing)}; found {list(runs.columns)}")
    parts = []
    for rec in runs.to_dict("records"):
        log = read_attack_log(folder / rec["run_dir"] / "log.csv")
        log.insert(0, "run_dir", rec["run_dir"])
        log.insert(0, "seed", int(rec["seed"]))
        log.insert(0, "system", rec["system"])
        parts.append(log)
    return pd.concat(parts, ignore_index=True)
