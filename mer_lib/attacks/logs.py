"""Attack logs in the published format (the reference's ``log.csv``, protocol §6.1) and as tidy tables.

:func:`read_attack_log` turns a ``log.csv`` (the authors' or the project's) into a tidy table, one row per excerpt and
one column per value (``true_valence`` ... ``new_tender``); :func:`write_attack_log` writes it back, losslessly for
float32 predictions. In the file, ``file`` is a list repr (``['146.mp3.spec']``) and the label and prediction
arrays are numpy reprs ``[[a b ...]]`` that may wrap lines.
"""
from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL, SYSTEM_REGISTRY
from mer_lib.errors import MerError
from mer_lib.metrics import pearson_per_column

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


# --------------------------------------------------------------------------
# Tidy tables
# --------------------------------------------------------------------------
def bottleneck_columns(prefix: str) -> list[str]:
    """``[<prefix>_bottleneck_melodiousness, ...]`` (7 columns)."""
    return [f"{prefix}_bottleneck_{f}" for f in MIDLEVEL]


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
    """Read a ``log.csv`` (published or the project's) into a tidy table, one row per excerpt, in file order.

    Columns: ``number``, ``iterations``, ``db_reference``, ``norm``, ``converged`` (bool), ``adv_target`` and the 24
    ``true_*``, ``orig_*``, ``new_*`` (emotion order of :data:`mer_lib.config.EMOTIONS`).

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
    """All attack logs of a folder of runs, with ``system``, ``seed`` and ``run_dir`` columns prepended.

    Parameters
    ----------
    folder : path-like
        A folder of run directories, each holding a ``log.csv`` (e.g. ``reference/published_runs``).
    runs_csv : path-like, optional
        ``system,seed,run_dir`` table naming every run (default: ``folder/runs.csv``); required, since the logs do not
        record their system.
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


SUMMARY_FILE = "summary.json"


def read_attack_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``attack.csv`` of a result folder (or the file itself); :class:`MerError` if the attack is not finished."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not (folder / SUMMARY_FILE).exists():
        raise MerError(f"{folder} holds no finished attack ({SUMMARY_FILE} missing); run attack_model first")
    table = pd.read_csv(folder / "attack.csv")
    table["converged"] = table["converged"].astype(bool)
    return table


#: Columns identifying one attacked model.
MODEL_KEYS: tuple[str, str] = ("system", "seed")


_PREDICTION_KINDS = ("orig", "new")


# --------------------------------------------------------------------------- helpers
def require_columns(logs: pd.DataFrame, columns: Iterable[str], what: str = "attack logs") -> None:
    if not isinstance(logs, pd.DataFrame):
        raise MerError(f"{what}: expected a pandas DataFrame, got {type(logs).__name__}")
    missing = [c for c in columns if c not in logs.columns]
    if missing:
        raise MerError(f"{what}: missing columns {missing}; found {list(logs.columns)}")
    if logs.empty:
        raise MerError(f"{what}: the table is empty")


def check_prediction_kind(which: str) -> None:
    if which not in _PREDICTION_KINDS:
        raise MerError(f"which={which!r}: expected 'orig' (clean predictions) or 'new' (after the attack)")


def check_unique_excerpts(logs: pd.DataFrame) -> None:
    dup = logs.duplicated(subset=[*MODEL_KEYS, "number"], keep=False)
    if dup.any():
        first = logs.loc[dup, [*MODEL_KEYS, "number"]].iloc[0].to_dict()
        raise MerError(f"attack logs: {int(dup.sum())} rows repeat a (system, seed, number) key, e.g. {first}; "
                       "each model must list every excerpt once (were two logs of the same run concatenated?)")


def prediction_columns(which: str) -> list[str]:
    return [*MODEL_KEYS, "number", *tidy_columns("true"), *tidy_columns(which)]


def system_order(systems: Iterable[str]) -> list[str]:
    """The distinct system names: the registry's order (the paper's) first, then any others alphabetically."""
    present = set(systems)
    known = [s for s in SYSTEM_REGISTRY if s in present]
    return known + sorted(present - set(SYSTEM_REGISTRY))


def sort_models(df: pd.DataFrame, by_system: str = "system") -> pd.DataFrame:
    rank = {s: i for i, s in enumerate(system_order(df[by_system]))}
    keys = [by_system] + [c for c in ("seed", "number") if c in df.columns]
    return (df.assign(_rank=df[by_system].map(rank))
              .sort_values(["_rank", *keys[1:]], kind="stable")
              .drop(columns="_rank").reset_index(drop=True))


def per_emotion_pearson(logs: pd.DataFrame, which: str = "orig") -> pd.DataFrame:
    """Pearson r per model and emotion: ``system``, ``seed`` and one column per emotion (NaN where r is undefined).

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs (see the module docstring).
    which : {"orig", "new"}
        Clean predictions or predictions after the attack.
    """
    check_prediction_kind(which)
    require_columns(logs, prediction_columns(which))
    check_unique_excerpts(logs)
    rows = []
    for (system, seed), g in logs.groupby(list(MODEL_KEYS), sort=False):
        r = pearson_per_column(g[tidy_columns("true")].to_numpy(), g[tidy_columns(which)].to_numpy())
        rows.append({"system": system, "seed": seed, **dict(zip(EMOTIONS, r))})
    return sort_models(pd.DataFrame(rows))


# --------------------------------------------------------------------------- per model
def abs_errors(logs: pd.DataFrame, which: str) -> np.ndarray:
    """``|prediction - true|`` per excerpt and emotion (float64); ``which``: ``"orig"`` (clean) or ``"new"``."""
    return np.abs(logs[tidy_columns(which)].to_numpy(np.float64) - logs[tidy_columns("true")].to_numpy(np.float64))


def per_model_metrics(logs: pd.DataFrame) -> pd.DataFrame:
    """Clean and adversarial performance of every model (system, seed), from tidy attack logs (protocol §7).

    ``logs`` needs ``system``, ``seed``, ``number``, ``true_*``, ``orig_*`` and ``new_*``; missing columns or a
    repeated (system, seed, number) raise :class:`MerError`. One row per model (the paper's system order, then seed):

    - ``n_excerpts``: test excerpts of the model;
    - ``clean_r``, ``adv_r``: Pearson r per emotion across the excerpts, averaged over the emotions where it is defined
      (their count: ``clean_r_emotions``, ``adv_r_emotions``), for the clean and the attacked predictions;
    - ``clean_mae``, ``adv_mae``: mean of ``|orig - true|`` and ``|new - true|`` over excerpts and emotions;
    - ``dmae``: ``adv_mae - clean_mae``, the paper's robustness measure (larger: less robust; scales with the gain);
    - ``clean_spread``: SD over excerpts (ddof=1) of each emotion's clean prediction, averaged over the emotions;
    - ``dmae_rel``: ``dmae / clean_spread``, the damage in units of the model's own output range.
    """
    require_columns(logs, [*MODEL_KEYS, "number", *tidy_columns("true"), *tidy_columns("orig"), *tidy_columns("new")])
    check_unique_excerpts(logs)
    rows = []
    for (system, seed), g in logs.groupby(list(MODEL_KEYS), sort=False):
        true = g[tidy_columns("true")].to_numpy(np.float64)
        row = {"system": system, "seed": seed, "n_excerpts": len(g)}
        for kind, name in (("orig", "clean"), ("new", "adv")):
            pred = g[tidy_columns(kind)].to_numpy(np.float64)
            r = pearson_per_column(true, pred)
            row[f"{name}_r"] = float(np.mean(r[~np.isnan(r)])) if (~np.isnan(r)).any() else float("nan")
            row[f"{name}_r_emotions"] = int((~np.isnan(r)).sum())
            row[f"{name}_mae"] = float(np.mean(abs_errors(g, kind)))
        row["dmae"] = row["adv_mae"] - row["clean_mae"]
        clean = g[tidy_columns("orig")].to_numpy(np.float64)
        row["clean_spread"] = float(np.mean(np.std(clean, axis=0, ddof=1))) if len(g) > 1 else float("nan")
        row["dmae_rel"] = row["dmae"] / row["clean_spread"] if row["clean_spread"] > 0 else float("nan")
        rows.append(row)
    cols = ["system", "seed", "n_excerpts", "clean_r", "clean_mae", "adv_r", "adv_mae", "dmae", "clean_spread",
            "dmae_rel", "clean_r_emotions", "adv_r_emotions"]
    return sort_models(pd.DataFrame(rows)[cols])


def as_per_model(data: pd.DataFrame, needed: Sequence[str] = ()) -> pd.DataFrame:
    """Accept tidy attack logs or a per-model table (the output of :func:`per_model_metrics`).

    A table without ``number`` that has every ``needed`` column is per-model (one row per system and seed, checked);
    anything else is summarised by :func:`per_model_metrics`. :class:`MerError` for a non-DataFrame, a per-model table
    lacking ``system``/``seed`` or repeating a model, or logs lacking a column.
    """
    if not isinstance(data, pd.DataFrame):
        raise MerError(f"expected a pandas DataFrame, got {type(data).__name__}")
    if set(needed) <= set(data.columns) and "number" not in data.columns:
        require_columns(data, [*MODEL_KEYS, *needed], "per-model table")
        if data.duplicated(subset=list(MODEL_KEYS)).any():
            raise MerError("per-model table: a (system, seed) pair appears more than once")
        return data
    return per_model_metrics(data)
