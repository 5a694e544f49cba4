"""A2M2E's bottleneck as an explanation: does it carry the mid-level features, and how do attacks move it?

Units are trained on the mid-level annotations / 10, so activations and their changes are in those units.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib.attacks.logs import bottleneck_columns, require_columns
from mer_lib.config import MIDLEVEL
from mer_lib.data import layout
from mer_lib.data.cache import PreparedData
from mer_lib.errors import MerError
from mer_lib.models.refit import head_inputs, least_squares_layer
from mer_lib.models.stage import load_model_dir
from mer_lib.models.tables import column_correlations
from mer_lib.models.train import predict

#: Granularities of :func:`unit_moves`.
MOVES_PER = ("excerpt", "model", "unit")


def read_controls(data_dir: str | os.PathLike) -> pd.DataFrame | None:
    """The ground-truth controls of a synthetic dataset (:func:`mer_lib.data.stage.dataset_dir`), indexed by ``number``.

    Returns
    -------
    pandas.DataFrame or None
        The 7 mid-level controls (annotation scale / 10) and the nuisance controls; None without
        ``synthetic/controls.csv`` (the real data).

    Raises
    ------
    MerError
        If the file lacks ``number`` or a mid-level control.
    """
    path = layout.controls_path(data_dir)
    if not path.exists():
        return None
    controls = pd.read_csv(path)
    missing = [c for c in ("number", *MIDLEVEL) if c not in controls.columns]
    if missing:
        raise MerError(f"{path}: missing columns {missing}")
    return controls.set_index("number")


def _rows(frame: pd.DataFrame, numbers, what: str) -> pd.DataFrame:
    absent = [int(n) for n in numbers if n not in frame.index]
    if absent:
        raise MerError(f"{what}: no row for excerpts {absent[:5]}{' ...' if len(absent) > 5 else ''}")
    return frame.loc[numbers]


def controls_vs_annotations(controls: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """Pearson r of each mid-level control with its annotation over the excerpts of the prepared ``table``.

    The annotations are the controls plus rater noise, so this bounds how well a model can recover a feature from
    them. Returns a Series indexed by feature, named ``r(control, annotation)``.
    """
    aligned = _rows(controls, table.index, "controls")
    return pd.Series({f: np.corrcoef(aligned[f], table[f])[0, 1] for f in MIDLEVEL}, name="r(control, annotation)")


def _references(prepared: PreparedData, controls: pd.DataFrame | None, numbers) -> list[tuple[str, pd.DataFrame]]:
    """What units are scored against: the controls (where known), then the annotations."""
    references = [("annotations", prepared.table.loc[numbers])]
    if controls is not None:
        references.insert(0, ("controls", _rows(controls, numbers, "controls")))
    return references


def bottleneck_units(model_dir: str | os.PathLike, prepared: PreparedData, numbers) -> pd.DataFrame:
    """Bottleneck activations of a trained bottleneck model (A2M2E, A2B2E, aA2B2E) on the excerpts ``numbers``.

    Returns a DataFrame indexed by ``number``, one column per unit, named after its mid-level feature.
    """
    model, _ = load_model_dir(model_dir)
    _, units = predict(model, prepared.excerpts(numbers))
    if units is None:
        raise MerError(f"{Path(model_dir)}: {model.system} has no bottleneck")
    return pd.DataFrame(units, index=pd.Index(numbers, name="number"), columns=list(MIDLEVEL))


def bottleneck_agreement(dirs: dict[tuple[str, int], Path], prepared: PreparedData, controls: pd.DataFrame | None,
                         split: str = "test") -> pd.DataFrame:
    """Pearson r of every bottleneck unit with its control and with its annotation, per model.

    Parameters
    ----------
    dirs : dict
        ``{(system, seed): model folder}`` of bottleneck models.
    controls : pandas.DataFrame or None
        :func:`read_controls`; None (real data) gives the annotation rows only.

    Returns
    -------
    pandas.DataFrame
        Per model and reference: ``system``, ``seed``, ``against`` (``"controls"``, ``"annotations"``), one r per
        feature. Both rows about equal: the units learned the features, not the raters' noise.
    """
    numbers = prepared.numbers(split)
    references = _references(prepared, controls, numbers)
    rows = []
    for (system, seed), path in dirs.items():
        units = bottleneck_units(path, prepared, numbers)
        for against, reference in references:
            rows.append({"system": system, "seed": seed, "against": against,
                         **column_correlations(units, reference).to_dict()})
    return pd.DataFrame(rows)


def embedding_probe(dirs: dict[tuple[str, int], Path], prepared: PreparedData, controls: pd.DataFrame | None,
                    split: str = "test") -> pd.DataFrame:
    """A linear probe of the mid-level features on each model's emotion-layer input.

    For A2E and aA2E that is the pooled backbone embedding: does the black box carry each feature without being
    trained on it? Least squares (:func:`mer_lib.models.refit.least_squares_layer`) fitted on the training excerpts'
    annotations, scored on ``split``.

    Parameters
    ----------
    dirs, controls
        As for :func:`bottleneck_agreement`, whose rows it returns in the same form.
    """
    fit, numbers = prepared.numbers("train"), prepared.numbers(split)
    references = _references(prepared, controls, numbers)
    rows = []
    for (system, seed), path in dirs.items():
        model, _ = load_model_dir(path)
        weight, bias = least_squares_layer(head_inputs(model, prepared.excerpts(fit)),
                                           prepared.table.loc[fit, list(MIDLEVEL)].to_numpy(np.float64))
        probe = head_inputs(model, prepared.excerpts(numbers)) @ weight.T + bias
        probe = pd.DataFrame(probe, index=pd.Index(numbers, name="number"), columns=list(MIDLEVEL))
        for against, reference in references:
            rows.append({"system": system, "seed": seed, "against": against,
                         **column_correlations(probe, reference).to_dict()})
    return pd.DataFrame(rows)


def unit_moves(logs: pd.DataFrame, per: str = "excerpt", system: str = "A2M2E") -> pd.DataFrame:
    """How far an attack moved each bottleneck unit of ``system`` (adversarial minus clean activation).

    Parameters
    ----------
    logs : pandas.DataFrame
        The project's tidy attack logs (:func:`mer_lib.attacks.stage.attack_models`) with ``orig_bottleneck_*``
        and ``new_bottleneck_*``.
    per : {"excerpt", "model", "unit"}
        ``"excerpt"``: one row per excerpt and unit (``system``, ``seed``, ``number``, ``unit``, ``change``);
        ``"model"``: per (system, seed), each unit's median |change|; ``"unit"``: per unit, ``median change`` and
        ``median |change|`` over all excerpts and seeds.
    """
    if per not in MOVES_PER:
        raise MerError(f"unit_moves: per must be one of {list(MOVES_PER)}, got {per!r}")
    require_columns(logs, ["system", "seed", "number", *bottleneck_columns("orig"), *bottleneck_columns("new")])
    sub = logs[logs["system"] == system]
    if sub.empty:
        raise MerError(f"unit_moves: no attack logs of {system}; systems present: {sorted(logs['system'].unique())}")
    change = sub[bottleneck_columns("new")].to_numpy() - sub[bottleneck_columns("orig")].to_numpy()
    if per == "model":
        return (sub[["system", "seed"]].join(pd.DataFrame(np.abs(change), index=sub.index, columns=list(MIDLEVEL)))
                .groupby(["system", "seed"], as_index=False).median())
    if per == "unit":
        return pd.DataFrame({"median change": np.median(change, axis=0),
                             "median |change|": np.median(np.abs(change), axis=0)},
                            index=pd.Index(list(MIDLEVEL), name="unit"))
    wide = sub[["system", "seed", "number"]].join(pd.DataFrame(change, index=sub.index, columns=list(MIDLEVEL)))
    return wide.melt(id_vars=["system", "seed", "number"], var_name="unit", value_name="change")
