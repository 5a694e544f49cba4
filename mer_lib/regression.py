"""Regression checks of model-dependent numbers, with tolerances derived from the seed spread (protocol §10).

Another CPU acts like another draw of the seeds, so every number that depends on a trained model is checked as the
mean over the models (seeds) of a system, within :func:`tolerance` of an expected value. A quantity whose reference
values are all positive (a dMAE, a norm, an r) is checked on a log scale, so its tolerance is a factor that never
admits zero.

Expected values live in ``mer_lib/expectations/<profile>.json``, pooled from the ``<run>/regression/<section>.csv``
files that :func:`check_models` writes, over independent draws::

    python -m mer_lib.regression derive --profile quick RUN_DIR [RUN_DIR ...]
    python -m mer_lib.regression derive --profile quick --sections "10_*" --merge RUN_DIR [RUN_DIR ...]

The second form adds (or replaces) the sections of a new notebook in the shipped file and keeps the others; the
draws must be described by the same labels, since a file's tolerances are meant to come from the same draws.

A failing check prints a warning; with ``$MER_STRICT_CHECKS=1`` (set by ``make test``) it raises
:class:`RegressionFailure`, so nbval fails loudly.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib import artifacts
from mer_lib.config import RunLayout
from mer_lib.errors import MerError

__all__ = ["K_SIGMA", "STRICT_ENV", "EXPECTATIONS_DIR", "RegressionFailure", "tolerance", "load_expectations",
           "check_models", "derive_expectations", "merge_expectations", "strict", "admits_zero"]

#: Tolerance in standard deviations of the difference between two independent draws.
K_SIGMA = 4.0
#: Environment variable that turns failing checks into errors (``make test`` sets it).
STRICT_ENV = "MER_STRICT_CHECKS"
#: Folder of the expectation files (``<profile>.json``), shipped with the package.
EXPECTATIONS_DIR = Path(__file__).resolve().parent / "expectations"
_FLOOR = 1e-6


class RegressionFailure(MerError):
    """A model-dependent number is outside its tolerance (strict mode)."""


def strict() -> bool:
    """Whether failing checks raise (``$MER_STRICT_CHECKS`` set to 1/true/yes)."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes")


def tolerance(sd: float, n: int, n_ref: int, k: float = K_SIGMA) -> float:
    """``k * sd * sqrt(1/n + 1/n_ref)``, at least a tiny floor.

    ``k`` standard deviations of the chance difference between a run's mean over ``n`` models and the reference mean
    over ``n_ref`` models, for a quantity whose per-model standard deviation is ``sd``.
    """
    if n < 1 or n_ref < 1:
        raise MerError(f"tolerance: need n >= 1 and n_ref >= 1, got {n}, {n_ref}")
    if not math.isfinite(sd) or sd < 0:
        raise MerError(f"tolerance: invalid standard deviation {sd}")
    return max(k * sd * math.sqrt(1.0 / n + 1.0 / n_ref), _FLOOR)


def load_expectations(profile: str, folder: str | os.PathLike | None = None) -> dict | None:
    """The expectations of a profile, or None if none were recorded for it."""
    path = Path(folder or EXPECTATIONS_DIR) / f"{profile}.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MerError(f"{path}: not a valid expectations file ({exc})") from None
    if not isinstance(data, dict) or "sections" not in data:
        raise MerError(f"{path}: expected a JSON object with a 'sections' field")
    return data


def _key(quantity: str, group: str) -> str:
    return f"{quantity} | {group}"


def _long(per_model: pd.DataFrame, quantities: Sequence[str], by: str) -> pd.DataFrame:
    missing = [c for c in (by, "seed", *quantities) if c not in per_model.columns]
    if missing:
        raise MerError(f"check_models: columns {missing} missing; have {list(per_model.columns)}")
    if per_model.duplicated(subset=[by, "seed"]).any():
        raise MerError(f"check_models: a ({by}, seed) pair appears more than once")
    return per_model[[by, "seed", *quantities]].melt(id_vars=[by, "seed"], var_name="quantity",
                                                      value_name="value").rename(columns={by: "group"})


def check_models(per_model: pd.DataFrame, quantities: Sequence[str], profile: str, section: str,
                 run_dir: str | os.PathLike | None = None, by: str = "system",
                 expectations: Mapping | None = None, k: float = K_SIGMA, show: bool = True) -> pd.DataFrame:
    """Check the mean over seeds of model-dependent quantities against the profile's expectations.

    Parameters
    ----------
    per_model : pandas.DataFrame
        One row per model: ``by`` (the group column, usually ``system``), ``seed`` and the ``quantities`` columns.
    profile, section : str
        The profile (selects ``mer_lib/expectations/<profile>.json``); the name of this group of checks, e.g.
        ``"02_train"``.
    run_dir : path-like, optional
        Where the per-model values go, as ``regression/<section>.csv`` (what :func:`derive_expectations` reads).
    expectations : mapping, optional
        Use these instead of the profile's file (tests).
    k, show : float, bool
        Tolerance width in standard deviations; print one line per quantity and a verdict.

    Returns
    -------
    pandas.DataFrame
        One row per (quantity, group): ``section``, ``quantity``, ``group``, ``n``, ``value`` (mean over models;
        geometric on the log scale), ``expected``, ``tolerance`` (a factor on the log scale), ``scale`` and ``ok``
        (None where no expectation was recorded).

    Raises
    ------
    RegressionFailure
        In strict mode, if a quantity is outside its tolerance or the profile has expectations but not for it.
    """
    long = _long(per_model, quantities, by)
    if run_dir is not None:
        artifacts.write_text(RunLayout(run_dir).regression / f"{section}.csv",
                             long.rename(columns={"group": by}).to_csv(index=False))
    exp = expectations if expectations is not None else load_expectations(profile)
    recorded = None if exp is None else exp.get("sections", {}).get(section)
    rows = []
    for (quantity, group), g in long.groupby(["quantity", "group"], sort=False):
        values = g["value"].to_numpy(np.float64)
        value = float(np.mean(values))
        row = {"section": section, "quantity": quantity, "group": group, "n": len(values), "value": value,
               "expected": np.nan, "tolerance": np.nan, "scale": None, "ok": None}
        ref = None if recorded is None else recorded.get(_key(quantity, group))
        if ref is not None:
            row.update(_judge(values, ref, k))
        rows.append(row)
    table = pd.DataFrame(rows)
    failed = table[table["ok"] == False]  # noqa: E712 (None must not count as a failure)
    unknown = table[table["ok"].isna()]
    if show:
        _print(table, profile, section, exp is not None)
    if exp is not None and strict() and (len(failed) or len(unknown)):
        names = [f"{r.quantity} [{r.group}] = {r.value:.4g} (expected {r.expected:.4g} "
                 f"{'x/÷' if r.scale == 'log' else '±'} {r.tolerance:.3g})" for r in failed.itertuples()] + [f"{r.quantity} [{r.group}]: no expectation recorded"
                                                   for r in unknown.itertuples()]
        raise RegressionFailure(f"regression check {section!r} (profile {profile!r}): {len(names)} of "
                                f"{len(table)} quantities failed:\n  " + "\n  ".join(names))
    return table


def _judge(values: np.ndarray, ref: Mapping, k: float) -> dict:
    """The result columns of one quantity against its reference (log scale: geometric means, a factor)."""
    tol = tolerance(float(ref["sd"]), len(values), int(ref["n"]), k)
    if ref.get("scale", "linear") != "log":
        value = float(np.mean(values))
        return {"value": value, "expected": float(ref["mean"]), "tolerance": tol, "scale": "linear",
                "ok": bool(np.isfinite(value) and abs(value - float(ref["mean"])) <= tol)}
    positive = bool(np.all(values > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mean = float(np.mean(np.log(values))) if positive else -math.inf
    return {"value": math.exp(log_mean), "expected": math.exp(float(ref["mean"])), "tolerance": math.exp(tol),
            "scale": "log", "ok": bool(positive and abs(log_mean - float(ref["mean"])) <= tol)}


def admits_zero(ref: Mapping, n: int | None = None) -> bool:
    """Whether a check of ``n`` models against ``ref`` would pass a run whose values are all zero.

    ``n`` defaults to the models one run checks (``ref["n_per_draw"]``, recorded by :func:`derive_expectations`).
    """
    n = int(ref["n_per_draw"]) if n is None else n
    if ref.get("scale", "linear") == "log":
        return False
    return abs(float(ref["mean"])) <= tolerance(float(ref["sd"]), n, int(ref["n"]))


def _print(table: pd.DataFrame, profile: str, section: str, have_expectations: bool) -> None:
    if not have_expectations:
        print(f"[{section}] no expectations recorded for profile {profile!r}: values shown, nothing checked")
    width = max(len(f"{q} [{g}]") for q, g in zip(table["quantity"], table["group"]))
    for r in table.itertuples():
        name = f"{r.quantity} [{r.group}]".ljust(width)
        if r.ok is None:
            print(f"{name}  value {r.value:9.4f}  (n={r.n})  expected    n/a")
        else:
            band = f"x/÷ {r.tolerance:.3f}" if r.scale == "log" else f"± {r.tolerance:.4f}"
            print(f"{name}  value {r.value:9.4f}  (n={r.n})  expected {r.expected:9.4f} {band}  "
                  f"{'ok' if r.ok else 'FAILED'}")
    n_fail = int((table["ok"] == False).sum())  # noqa: E712
    n_ok = int((table["ok"] == True).sum())  # noqa: E712
    if have_expectations:
        verdict = "all within tolerance" if n_fail == 0 else f"{n_fail} OUTSIDE TOLERANCE"
        print(f"[{section}] {n_ok} of {len(table)} quantities checked ok; {verdict}"
              + ("" if strict() or n_fail == 0 else f" (an error when ${STRICT_ENV}=1, as in make test)"))


# --------------------------------------------------------------------------- deriving expectations
def derive_expectations(run_dirs: Sequence[str | os.PathLike], profile: str,
                        labels: Sequence[str] | None = None, sections: Sequence[str] | None = None,
                        signed: Sequence[str] = ()) -> dict:
    """Pool the per-model values of independent draws into an expectations document.

    Parameters
    ----------
    run_dirs : sequence of path-like
        Complete runs of ``profile``, each holding the ``regression/<section>.csv`` of :func:`check_models`.
    profile : str
        The profile the runs used.
    labels : sequence of str, optional
        A description of every draw (e.g. which CPU kernels), recorded.
    sections : sequence of str, optional
        Only the sections whose names match one of these shell patterns (e.g. ``"10_*"``); default: all.
    signed : sequence of str
        Quantities that can be zero or negative by their nature even where the draws happened to be positive
        (e.g. a recovered share of an attack's damage): checked on the linear scale and marked ``"signed"``.

    Returns
    -------
    dict
        ``{"profile", "k_sigma", "draws", "created", "machine", "sections": {section: {"<quantity> | <group>":
        {"mean", "sd", "n", "n_per_draw", "scale", "min", "signed", "draw_means"}}}}``; every model counts as independent, ``sd`` has
        ``ddof=1``, and a quantity with only positive values has ``scale`` ``"log"`` (``mean``, ``sd`` of its logs).
    """
    if not run_dirs:
        raise MerError("derive_expectations: no run directories given")
    labels = list(labels) if labels is not None else [str(d) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise MerError("derive_expectations: one label per run directory")
    frames = []
    for i, run in enumerate(run_dirs):
        folder = RunLayout(run).regression
        files = [f for f in sorted(folder.glob("*.csv"))
                 if sections is None or any(fnmatch.fnmatchcase(f.stem, pat) for pat in sections)]
        if not files:
            wanted = "" if sections is None else f" matching {list(sections)}"
            raise MerError(f"{folder}: no regression/*.csv{wanted}; run the notebooks of the profile there first")
        for f in files:
            df = pd.read_csv(f)
            group_col = [c for c in df.columns if c not in ("seed", "quantity", "value")]
            if len(group_col) != 1:
                raise MerError(f"{f}: expected columns <group>, seed, quantity, value; got {list(df.columns)}")
            frames.append(df.rename(columns={group_col[0]: "group"}).assign(section=f.stem, draw=i))
    data = pd.concat(frames, ignore_index=True)
    sections: dict[str, dict] = {}
    for (section, quantity, group), g in data.groupby(["section", "quantity", "group"], sort=True):
        v = g["value"].to_numpy(np.float64)
        if not np.isfinite(v).all():
            raise MerError(f"derive_expectations: non-finite values of {quantity} [{group}] in section {section}")
        scale = "log" if (v > 0).all() and quantity not in signed else "linear"
        t = np.log(v) if scale == "log" else v
        sd = float(np.std(t, ddof=1)) if len(t) > 1 else 0.0
        sections.setdefault(section, {})[_key(quantity, group)] = {
            "mean": float(np.mean(t)), "sd": sd, "n": int(len(v)), "scale": scale, "min": float(v.min()),
            "signed": quantity in signed, "n_per_draw": int(g.groupby("draw").size().min()),
            "draw_means": [float(g[g["draw"] == d]["value"].mean()) for d in sorted(g["draw"].unique())]}
    return {"profile": profile, "k_sigma": K_SIGMA, "draws": labels,
            "created": _dt.date.today().isoformat(),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
            "sections": sections}


def merge_expectations(existing: Mapping, new: Mapping, sections: Sequence[str] | None = None) -> dict:
    """``existing`` with the sections of ``new`` added or replaced; both must come from draws with the same labels.

    ``sections``: the shell patterns ``new`` was derived for; existing sections matching them are dropped first, so a
    check that a notebook no longer makes leaves no stale expectation behind.
    """
    if existing.get("profile") != new["profile"]:
        raise MerError(f"merge: profile {new['profile']!r} differs from the file's {existing.get('profile')!r}")
    if list(existing.get("draws", [])) != list(new["draws"]):
        raise MerError(f"merge: the draws {list(new['draws'])} differ from the file's {existing.get('draws')}; "
                       "label them alike if they are the same draws, or derive the whole file again")
    merged = dict(existing)
    kept = {name: v for name, v in existing.get("sections", {}).items()
            if not any(fnmatch.fnmatchcase(name, pat) for pat in (sections or ()))}
    merged["sections"] = {**kept, **new["sections"]}
    merged["merged"] = [*existing.get("merged", []),
                        {"sections": sorted(new["sections"]), "created": new["created"], "machine": new["machine"]}]
    return merged


def main(argv: list[str] | None = None) -> int:
    """``python -m mer_lib.regression derive --profile quick RUN_DIR [RUN_DIR ...] [--label ...] [--sections PAT
    --merge]``."""
    parser = argparse.ArgumentParser(prog="python -m mer_lib.regression")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive", help="pool the per-model values of independent draws into expectations")
    d.add_argument("run_dirs", nargs="+")
    d.add_argument("--profile", required=True)
    d.add_argument("--label", action="append", help="description of each draw, in order")
    d.add_argument("--out", default=None, help="default: mer_lib/expectations/<profile>.json")
    d.add_argument("--force", action="store_true", help="overwrite an existing expectations file")
    d.add_argument("--sections", action="append", help="only sections matching this shell pattern (repeatable)")
    d.add_argument("--merge", action="store_true", help="add the sections to the existing file, keep the others")
    d.add_argument("--signed", action="append", default=[],
                   help="a quantity that can be zero or negative by nature: linear scale (repeatable)")
    args = parser.parse_args(argv)
    try:
        doc = derive_expectations(args.run_dirs, args.profile, args.label, args.sections, args.signed)
        out = Path(args.out) if args.out else EXPECTATIONS_DIR / f"{args.profile}.json"
        if args.merge:
            if not out.exists():
                raise MerError(f"{out} does not exist; nothing to merge into")
            doc = merge_expectations(artifacts.read_json(out), doc, args.sections)
        elif out.exists() and not args.force:
            raise MerError(f"{out} exists; pass --force to replace it (or --merge to add sections)")
        artifacts.write_text(out, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    except MerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(len(v) for v in doc["sections"].values())
    print(f"wrote {out}: {n} quantities in {len(doc['sections'])} sections from {len(args.run_dirs)} draws")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
