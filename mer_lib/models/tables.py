"""Tables of trained models, read from their folders: metrics, history, cost, head refit, per-target r, weights."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.errors import MerError
from mer_lib.models.nets import MERModel


def _records(dirs: dict[tuple[str, int], Path], name: str) -> Iterable[tuple[str, int, dict]]:
    for (system, seed), path in dirs.items():
        file = Path(path) / name
        if not file.exists():
            raise MerError(f"{file}: missing; was the training of {system} seed {seed} finished?")
        yield system, seed, artifacts.read_json(file)


def metrics_table(dirs: dict[tuple[str, int], Path], target: str = "emotions") -> pd.DataFrame:
    """One row per (system, seed, split): ``n``, ``mean_r``, ``mae``, ``rmse``, ``r2``.

    ``target``: ``"emotions"`` or ``"midlevel"`` (bottleneck units vs the mid-level annotations; bottleneck models).
    """
    rows = []
    for system, seed, metrics in _records(dirs, "metrics.json"):
        for split in ("train", "valid", "test"):
            rep = metrics.get(split, {}).get(target)
            if rep is None:
                continue
            rows.append({"system": system, "seed": seed, "split": split,
                         **{k: rep[k] for k in ("n", "mean_r", "mae", "rmse", "r2")}})
    return pd.DataFrame(rows)


def refit_table(dirs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """The head refit of every model (:func:`mer_lib.models.refit.refit_head`), one row per refit layer.

    Columns ``system``, ``seed``, ``layer`` (``"bottleneck"`` or ``"emotion"``), ``before`` and ``after`` (the layer's
    training MSE against its targets) and ``norm_before`` and ``norm_after`` (its weight's Frobenius norm). ``before``
    shows what training taught the layer, which the refit hides from the test metrics (protocol §5). Models trained
    without a refit have no rows.
    """
    rows = []
    for system, seed, metrics in _records(dirs, "metrics.json"):
        for layer, record in (metrics.get("head_refit") or {}).items():
            if record is not None:
                rows.append({"system": system, "seed": seed, "layer": layer,
                             **{k: record[k] for k in ("before", "after", "norm_before", "norm_after")}})
    return pd.DataFrame(rows, columns=["system", "seed", "layer", "before", "after", "norm_before", "norm_after"])


def per_target_r(dirs: dict[tuple[str, int], Path], split: str = "test", target: str = "emotions") -> pd.DataFrame:
    """Pearson r per emotion (or mid-level feature): one row per (system, seed, name)."""
    rows = []
    for system, seed, metrics in _records(dirs, "metrics.json"):
        rep = metrics.get(split, {}).get(target)
        if rep is None:
            continue
        rows += [{"system": system, "seed": seed, "target": k, "r": v} for k, v in rep["r"].items()]
    return pd.DataFrame(rows)


def history_table(dirs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """Every epoch of every run, with ``system`` and ``seed`` columns."""
    parts = []
    for (system, seed), path in dirs.items():
        h = pd.read_csv(Path(path) / "history.csv")
        h.insert(0, "seed", seed)
        h.insert(0, "system", system)
        parts.append(h)
    return pd.concat(parts, ignore_index=True)


def cost_table(dirs: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """The ``cost.json`` counters of every run, one row per (system, seed).

    ``passes`` adds up the forward and backward example passes of training (attacks in adversarial training included).
    """
    table = pd.DataFrame([{"system": system, "seed": seed, **cost}
                          for system, seed, cost in _records(dirs, "cost.json")])
    if {"train_forward", "train_backward"} <= set(table.columns):
        table["passes"] = table["train_forward"] + table["train_backward"]
    return table


#: Columns of :func:`cost_summary` by default.
COST_COLUMNS: tuple[str, ...] = ("epochs_run", "best_epoch", "passes", "train_forward", "train_backward",
                                 "optimizer_steps", "adversarial_steps", "wall_seconds")


def cost_summary(dirs: dict[tuple[str, int], Path], columns: Sequence[str] = COST_COLUMNS) -> pd.DataFrame:
    """Mean over seeds of the training cost of each system, indexed by ``system`` in the order of ``dirs``.

    One column per counter of :func:`cost_table` in ``columns`` (``MerError`` for an unknown one).
    """
    table = cost_table(dirs)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise MerError(f"cost_summary: unknown columns {missing}; available: {list(table.columns)}")
    return table.groupby("system", sort=False)[list(columns)].mean()


def bottleneck_weights(model: MERModel) -> pd.DataFrame:
    """The learned mid-level -> emotion weights (7 x 8) of a bottleneck model.

    With no nonlinearity after the bottleneck, these weights (plus a bias) *are* the model's explanation.
    """
    if model.bottleneck is None:
        raise MerError(f"{model.system} has no bottleneck")
    w = model.emotion.weight.detach().cpu().numpy().T  # (7, 8)
    return pd.DataFrame(w, index=list(MIDLEVEL), columns=list(EMOTIONS))


def column_correlations(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Pearson r between same-named columns of two aligned tables."""
    common = [c for c in a.columns if c in b.columns]
    return pd.Series({c: float(np.corrcoef(a[c].to_numpy(float), b[c].to_numpy(float))[0, 1]) for c in common})
