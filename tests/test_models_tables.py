"""Tables of trained models read from their folders: metrics, history, cost and bottleneck weights."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_lib import artifacts
from mer_lib.config import EMOTIONS, MIDLEVEL
from mer_lib.errors import MerError
from mer_lib.models import tables
from mer_lib.models.nets import build_model


def _cost(epochs: int, forward: int, backward: int, adversarial: int = 0) -> dict:
    return {"epochs_run": epochs, "best_epoch": epochs - 1, "train_forward": forward, "train_backward": backward,
            "optimizer_steps": forward // 8, "adversarial_steps": adversarial, "wall_seconds": 1.5}


def _report(r: float) -> dict:
    return {"n": 4, "mean_r": r, "mae": 0.1, "rmse": 0.2, "r2": 0.3, "r": {e: r for e in EMOTIONS}}


@pytest.fixture()
def dirs(tmp_path):
    """Four finished runs: A2E and aA2E, two seeds each, with cost, metrics and history files."""
    out = {}
    runs = [("A2E", 1, _cost(10, 80, 80)), ("A2E", 2, _cost(8, 64, 64)),
            ("aA2E", 1, _cost(10, 176, 160, 9)), ("aA2E", 2, _cost(10, 176, 160, 9))]
    for i, (system, seed, cost) in enumerate(runs):
        folder = tmp_path / f"{system}-{seed}"
        artifacts.write_json(folder / "cost.json", cost)
        artifacts.write_json(folder / "metrics.json", {"test": {"emotions": _report(0.5 + i / 10)},
                                                       "valid": {"emotions": _report(0.4)}})
        pd.DataFrame({"epoch": [1, 2], "train_emotion_mse": [0.2, 0.1]}).to_csv(folder / "history.csv", index=False)
        out[(system, seed)] = folder
    return out


def test_cost_table_adds_the_passes_and_summary_averages_per_system(dirs):
    cost = tables.cost_table(dirs)
    assert list(cost[["system", "seed"]].itertuples(index=False, name=None)) == list(dirs)
    np.testing.assert_array_equal(cost["passes"], [160, 128, 336, 336])
    summary = tables.cost_summary(dirs)
    assert summary.index.name == "system" and list(summary.index) == ["A2E", "aA2E"]
    assert list(summary.columns) == list(tables.COST_COLUMNS)
    assert summary.loc["A2E", "passes"] == 144.0 and summary.loc["aA2E", "adversarial_steps"] == 9.0
    assert list(tables.cost_summary(dirs, ["passes"]).columns) == ["passes"]
    with pytest.raises(MerError, match="unknown columns"):
        tables.cost_summary(dirs, ["joules"])


def test_missing_cost_file_names_the_run(dirs):
    (dirs[("A2E", 2)] / "cost.json").unlink()
    with pytest.raises(MerError, match="A2E seed 2"):
        tables.cost_table(dirs)


def test_metrics_history_and_per_target_tables(dirs):
    metrics = tables.metrics_table(dirs)
    assert len(metrics) == 8 and set(metrics["split"]) == {"test", "valid"}
    assert metrics.query("split == 'test'")["mean_r"].round(6).tolist() == [0.5, 0.6, 0.7, 0.8]
    per_target = tables.per_target_r(dirs)
    assert len(per_target) == 4 * len(EMOTIONS) and set(per_target["target"]) == set(EMOTIONS)
    assert tables.per_target_r(dirs, target="midlevel").empty
    history = tables.history_table(dirs)
    assert list(history.columns[:3]) == ["system", "seed", "epoch"] and len(history) == 8


def test_bottleneck_weights_and_column_correlations():
    model = build_model("A2M2E", 0.0625)
    weights = tables.bottleneck_weights(model)
    assert weights.shape == (7, 8) and list(weights.index) == list(MIDLEVEL) and list(weights.columns) == list(EMOTIONS)
    np.testing.assert_array_equal(weights.to_numpy(), model.emotion.weight.detach().numpy().T)
    with pytest.raises(MerError, match="no bottleneck"):
        tables.bottleneck_weights(build_model("A2E", 0.0625))
    a = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [1.0, 0.0, 1.0]})
    b = pd.DataFrame({"x": [2.0, 4.0, 6.1], "z": [0.0, 1.0, 0.0]})
    r = tables.column_correlations(a, b)
    assert list(r.index) == ["x"] and r["x"] == pytest.approx(1.0, abs=1e-3)


def test_refit_table_reads_each_refit_layer(tmp_path):
    record = {"n": 16, "ridge": 0.01, "before": 0.4, "after": 0.02, "norm_before": 3.0, "norm_after": 7.0}
    dirs = {}
    for system, refit in (("A2M2E", {"bottleneck": record, "emotion": {**record, "before": 0.6}}),
                          ("A2B2E", {"bottleneck": None, "emotion": record}), ("A2E", None)):
        folder = tmp_path / system
        artifacts.write_json(folder / "metrics.json", {"system": system, "seed": 1, "head_refit": refit})
        dirs[(system, 1)] = folder
    table = tables.refit_table(dirs)
    assert list(zip(table["system"], table["layer"])) == [("A2M2E", "bottleneck"), ("A2M2E", "emotion"),
                                                           ("A2B2E", "emotion")]
    assert table.loc[0, "before"] == 0.4 and table.loc[1, "before"] == 0.6 and table.loc[0, "norm_after"] == 7.0
