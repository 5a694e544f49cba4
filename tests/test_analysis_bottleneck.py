"""A2M2E's bottleneck against the ground-truth controls, and how attacks move its units."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import fake_prepared

from mer_lib import artifacts
from mer_lib.analysis import bottleneck
from mer_lib.attacks.logs import bottleneck_columns
from mer_lib.config import MIDLEVEL
from mer_lib.data import layout
from mer_lib.errors import MerError
from mer_lib.models.nets import build_model
from mer_lib.models.refit import head_inputs, least_squares_layer
from mer_lib.models.tables import column_correlations
from mer_lib.models.train import predict

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_controls(data_dir, numbers, values: np.ndarray) -> None:
    frame = pd.DataFrame(values, columns=list(MIDLEVEL))
    frame.insert(0, "number", [f"{n:03d}" for n in numbers])
    frame["tempo"] = 0.5
    path = layout.controls_path(data_dir)
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)


def test_read_controls_indexes_by_number_and_is_none_for_real_data(tmp_path):
    assert bottleneck.read_controls(tmp_path) is None
    _write_controls(tmp_path, [1, 2, 3], np.full((3, 7), 0.4))
    controls = bottleneck.read_controls(tmp_path)
    assert list(controls.index) == [1, 2, 3] and set(MIDLEVEL) <= set(controls.columns)
    pd.DataFrame({"number": [1], "melodiousness": [0.1]}).to_csv(layout.controls_path(tmp_path), index=False)
    with pytest.raises(MerError, match="controls.csv: missing columns"):
        bottleneck.read_controls(tmp_path)


def test_controls_vs_annotations_correlates_each_feature(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((10, 7))
    _write_controls(tmp_path, range(1, 11), truth)
    table = pd.DataFrame(2 * truth[::-1] + 1, index=pd.Index(range(10, 0, -1), name="number"), columns=list(MIDLEVEL))
    r = bottleneck.controls_vs_annotations(bottleneck.read_controls(tmp_path), table)
    assert r.name == "r(control, annotation)" and list(r.index) == list(MIDLEVEL)
    np.testing.assert_allclose(r.to_numpy(), 1.0)
    with pytest.raises(MerError, match="no row for excerpts"):
        bottleneck.controls_vs_annotations(bottleneck.read_controls(tmp_path), table.rename(index={1: 99}))


def _model_dir(path, system: str = "A2M2E"):
    torch.manual_seed(0)
    model = build_model(system, 0.0625)
    artifacts.write_json(path / "config.json", {"config": {"system": system, "train": {"width": 0.0625}}})
    torch.save(model.state_dict(), path / "model.pt")
    artifacts.write_text(path / "history.csv", "epoch\n1\n")
    artifacts.write_json(path / "cost.json", {})
    artifacts.write_checksums(path, ["model.pt", "history.csv", "cost.json"])
    artifacts.write_json(path / "metrics.json", {})
    return model.eval()


def test_bottleneck_units_and_agreement_use_the_test_split(tmp_path):
    prepared = fake_prepared(tmp_path)
    model = _model_dir(tmp_path / "m1")
    numbers = prepared.numbers("test")
    units = bottleneck.bottleneck_units(tmp_path / "m1", prepared, numbers)
    # the folder's model is loaded in its training layout (channels-last weights): the same float rounding
    expected = predict(model.to(memory_format=torch.channels_last), prepared.excerpts(numbers))[1]
    assert list(units.columns) == list(MIDLEVEL) and list(units.index) == list(numbers)
    np.testing.assert_array_equal(units.to_numpy(), expected)

    controls = prepared.table[list(MIDLEVEL)] * 0.5 + 0.1
    agreement = bottleneck.bottleneck_agreement({("A2M2E", 4): tmp_path / "m1"}, prepared, controls)
    assert agreement[["system", "seed", "against"]].values.tolist() == [["A2M2E", 4, "controls"],
                                                                       ["A2M2E", 4, "annotations"]]
    direct = column_correlations(units, prepared.table.loc[numbers])
    np.testing.assert_allclose(agreement.loc[1, list(MIDLEVEL)].to_numpy(float), direct.to_numpy())
    np.testing.assert_allclose(agreement.loc[0, list(MIDLEVEL)].to_numpy(float), direct.to_numpy())

    _model_dir(tmp_path / "plain", "A2E")
    with pytest.raises(MerError, match="has no bottleneck"):
        bottleneck.bottleneck_units(tmp_path / "plain", prepared, numbers)


@pytest.fixture()
def logs() -> pd.DataFrame:
    """Two A2M2E seeds and one A2E model, 3 excerpts each; A2M2E's units move by seed * (unit index + 1)."""
    rows = []
    for system, seed in (("A2M2E", 1), ("A2M2E", 2), ("A2E", 1)):
        for number, sign in ((10, 1.0), (11, -1.0), (12, 2.0)):
            orig = np.linspace(0.1, 0.7, 7)
            row = {"system": system, "seed": seed, "number": number}
            row.update(zip(bottleneck_columns("orig"), orig))
            row.update(zip(bottleneck_columns("new"), orig + sign * seed * np.arange(1, 8)))
            rows.append(row)
    return pd.DataFrame(rows)


def test_unit_moves_per_excerpt_model_and_unit(logs):
    per_excerpt = bottleneck.unit_moves(logs)
    assert list(per_excerpt.columns) == ["system", "seed", "number", "unit", "change"]
    assert len(per_excerpt) == 6 * 7 and set(per_excerpt["system"]) == {"A2M2E"}
    first = per_excerpt[(per_excerpt["seed"] == 2) & (per_excerpt["number"] == 11)]
    np.testing.assert_allclose(first["change"], -2.0 * np.arange(1, 8))
    assert first["unit"].tolist() == list(MIDLEVEL)

    per_model = bottleneck.unit_moves(logs, per="model")
    assert per_model[["system", "seed"]].values.tolist() == [["A2M2E", 1], ["A2M2E", 2]]
    np.testing.assert_allclose(per_model[list(MIDLEVEL)].to_numpy(), [np.arange(1, 8), 2 * np.arange(1, 8)])

    per_unit = bottleneck.unit_moves(logs, per="unit")
    assert per_unit.index.name == "unit" and list(per_unit.index) == list(MIDLEVEL)
    np.testing.assert_allclose(per_unit["median change"], 1.5 * np.arange(1, 8))
    np.testing.assert_allclose(per_unit["median |change|"], 2.0 * np.arange(1, 8))
    assert bottleneck.unit_moves(logs, per="unit", system="A2E")["median change"].iloc[0] == pytest.approx(1.0)


def test_unit_moves_errors(logs):
    with pytest.raises(MerError, match="per must be one of"):
        bottleneck.unit_moves(logs, per="seed")
    with pytest.raises(MerError, match="no attack logs of aA2E"):
        bottleneck.unit_moves(logs, system="aA2E")
    with pytest.raises(MerError, match="missing columns"):
        bottleneck.unit_moves(logs.drop(columns=bottleneck_columns("new")[0]))


def test_embedding_probe_fits_on_train_and_scores_on_test(tmp_path):
    prepared = fake_prepared(tmp_path)
    model = _model_dir(tmp_path / "a2e", "A2E").to(memory_format=torch.channels_last)  # as loaded from its folder
    controls = prepared.table[list(MIDLEVEL)] * 0.5 + 0.1
    probe = bottleneck.embedding_probe({("A2E", 7): tmp_path / "a2e"}, prepared, controls)
    assert probe[["system", "seed", "against"]].values.tolist() == [["A2E", 7, "controls"], ["A2E", 7, "annotations"]]
    train, test = prepared.numbers("train"), prepared.numbers("test")
    weight, bias = least_squares_layer(head_inputs(model, prepared.excerpts(train)),
                                       prepared.table.loc[train, list(MIDLEVEL)].to_numpy(np.float64))
    fitted = pd.DataFrame(head_inputs(model, prepared.excerpts(test)) @ weight.T + bias, index=test,
                          columns=list(MIDLEVEL))
    expected = column_correlations(fitted, prepared.table.loc[test])
    np.testing.assert_allclose(probe.loc[1, list(MIDLEVEL)].to_numpy(float), expected.to_numpy())
    # controls are an affine map of the annotations here, so both rows agree; without controls one row
    np.testing.assert_allclose(probe.loc[0, list(MIDLEVEL)].to_numpy(float), expected.to_numpy(), atol=1e-6)
    alone = bottleneck.embedding_probe({("A2E", 7): tmp_path / "a2e"}, prepared, None)
    assert alone["against"].tolist() == ["annotations"]


def test_bottleneck_agreement_without_controls_scores_the_annotations(tmp_path):
    prepared = fake_prepared(tmp_path)
    _model_dir(tmp_path / "m1")
    agreement = bottleneck.bottleneck_agreement({("A2M2E", 4): tmp_path / "m1"}, prepared, None)
    assert agreement["against"].tolist() == ["annotations"]
