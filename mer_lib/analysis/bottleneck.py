"""A2M2E's bottleneck as an explanation: does it carry the mid-level features, and how do attacks move it?

- :func:`read_controls` and :func:`controls_vs_annotations`: the synthetic
  dataset's ground truth (the latent controls each excerpt was rendered from)
  and how well the noisy annotations measure it;
- :func:`bottleneck_units` and :func:`bottleneck_agreement`: a trained
  model's bottleneck activations, correlated with the controls and with the
  annotations;
- :func:`embedding_probe`: how well a linear probe on a black box's
  embedding (A2E's pooled backbone features) recovers the same features,
  i.e. whether the audio the models hear carries them at all;
- :func:`unit_moves`: how far the paper-mode attack moved each unit, from the
  clean and adversarial activations stored in the attack logs.

The units of a bottleneck model are trained on the mid-level annotations
divided by 10, so activations and their changes are in those units.
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
    """The ground-truth controls of a synthetic dataset, indexed by excerpt ``number``.

    Parameters
    ----------
    data_dir : path-like
        The dataset folder (:func:`mer_lib.data.stage.dataset_dir`).

    Returns
    -------
    pandas.DataFrame or None
        One row per excerpt with the 7 mid-level controls (on the annotations'
        scale divided by 10) and the nuisance controls; None for a dataset
        without ``synthetic/controls.csv`` (the real data).

    Raises
    ------
    MerError
        If the file lacks the ``number`` column or a mid-level control.
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
    """Pearson r between each mid-level control and its annotation, over the excerpts of ``table``.

    Parameters
    ----------
    controls : pandas.DataFrame
        :func:`read_controls`.
    table : pandas.DataFrame
        The prepared table (``table`` of a :class:`mer_lib.data.cache.PreparedData`).

    Returns
    -------
    pandas.Series
        Indexed by feature, named ``r(control, annotation)``. The annotations
        are the controls plus rater noise, so this bounds how well a model
        can recover a feature from the annotations.
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
    """The bottleneck activations of a trained model on some excerpts.

    Parameters
    ----------
    model_dir : path-like
        A finished model folder of a bottleneck system (A2M2E, A2B2E, aA2B2E).
    prepared : PreparedData
    numbers : sequence of int
        Excerpt IDs.

    Returns
    -------
    pandas.DataFrame
        One row per excerpt (indexed by ``number``), one column per unit,
        named after the mid-level feature it is trained on (for A2M2E).
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
    prepared : PreparedData
    controls : pandas.DataFrame or None
        :func:`read_controls`; None (real data) gives the annotation rows only.
    split : str
        Excerpts to evaluate on.

    Returns
    -------
    pandas.DataFrame
        Two rows per model: ``system``, ``seed``, ``against`` (``"controls"``
        or ``"annotations"``) and one column of r per mid-level feature. If
        the bottleneck learned the features (not the raters' noise), both rows
        are about equal.
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

    For A2E and aA2E that input is the pooled backbone embedding: the probe
    asks whether the black box's representation carries each feature,
    although it was never trained on it. The probe is an ordinary
    least-squares map (:func:`mer_lib.models.refit.least_squares_layer`)
    fitted on the training excerpts' annotations and scored on ``split``.

    Parameters
    ----------
    dirs : dict
        ``{(system, seed): model folder}``.
    prepared : PreparedData
    controls : pandas.DataFrame or None
        :func:`read_controls`; None (real data) scores against the annotations only.
    split : str
        Excerpts the probe is scored on.

    Returns
    -------
    pandas.DataFrame
        Rows as :func:`bottleneck_agreement` (``system``, ``seed``,
        ``against``, one r per feature), ``against`` being ``"controls"``
        and ``"annotations"``.
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
    """How far an attack moved each bottleneck unit (adversarial minus clean activation).

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs of the project (:func:`mer_lib.attacks.stage.attack_models`),
        with the ``orig_bottleneck_*`` and ``new_bottleneck_*`` columns.
    per : {"excerpt", "model", "unit"}
        ``"excerpt"``: long table, one row per (attacked excerpt, unit) with
        ``system``, ``seed``, ``number``, ``unit`` and ``change``;
        ``"model"``: one row per (system, seed) with the median |change| of
        every unit (one column per unit); ``"unit"``: one row per unit with
        the ``median change`` and the ``median |change|`` over every excerpt
        and seed.
    system : str
        The attacked system to look at.

    Returns
    -------
    pandas.DataFrame
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
