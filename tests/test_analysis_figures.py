"""The paper's figures: they draw, save, keep system colours and break the axis only when needed."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from mer_lib.analysis import figures
from mer_lib.attacks import logs
from mer_lib.attacks.logs import read_published_runs  # noqa: E402
from mer_lib.config import SYSTEMS  # noqa: E402
from mer_lib.errors import MerError  # noqa: E402


@pytest.fixture(scope="module")
def published(published_runs) -> pd.DataFrame:
    return read_published_runs(published_runs)


@pytest.fixture(scope="module")
def per_model(published) -> pd.DataFrame:
    return logs.per_model_metrics(published)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rgb(c) -> tuple[float, float, float]:
    return tuple(np.round(to_rgb(c), 6))


def _collections_by_gid(fig) -> dict[str, object]:
    return {c.get_gid(): c for ax in fig.axes for c in ax.collections if c.get_gid()}


def test_system_colors_are_colour_blind_palette_and_distinct():
    palette = {_rgb(c) for c in sns.color_palette("colorblind")}
    assert set(figures.SYSTEM_COLORS) == set(SYSTEMS)
    assert all(_rgb(c) in palette for c in figures.SYSTEM_COLORS.values())
    assert len(set(figures.SYSTEM_COLORS.values())) == len(SYSTEMS)
    extra = figures.system_colors(["A2M2E", "mine", "A2E", "other"])
    assert list(extra) == ["A2E", "A2M2E", "mine", "other"]
    assert extra["A2E"] == figures.SYSTEM_COLORS["A2E"] and extra["mine"] != extra["other"]
    assert {extra["mine"], extra["other"]}.isdisjoint(figures.SYSTEM_COLORS.values())


def test_axis_break_rule():
    calm = {"a": [1.0, 1.1, 1.2, 1.3, 1.4], "b": [2.0, 2.2, 2.4, 2.6, 2.8]}
    assert figures.axis_break_limits(calm) is None
    # an outlier of the box but close to the others: no break
    assert figures.axis_break_limits({**calm, "c": [1.0, 1.05, 1.1, 1.15, 3.0]}) is None
    far = {**calm, "c": [1.0, 1.05, 1.1, 1.15, 9.0]}
    low_top, high_bottom = figures.axis_break_limits(far)
    assert low_top == 2.8 and high_bottom == 9.0
    # values between the core and the cut stay in the lower panel: nothing falls into the gap
    mid = {**far, "d": [1.0, 1.1, 1.2, 1.3, 3.5]}
    assert figures.axis_break_limits(mid) == (3.5, 9.0)
    assert figures.axis_break_limits(far, ratio=10) is None
    with pytest.raises(MerError):
        figures.axis_break_limits(far, ratio=0)


def test_figure3_on_published_runs(per_model, tmp_path):
    fig = figures.figure3_dmae(per_model)
    assert len(fig.axes) == 1  # no model is far enough out to squash the boxes
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(SYSTEMS)
    boxes = {p.get_gid(): p for p in ax.patches if p.get_gid()}
    points = _collections_by_gid(fig)
    for s in SYSTEMS:
        assert _rgb(boxes[f"box:{s}"].get_facecolor()[:3]) == _rgb(figures.SYSTEM_COLORS[s])
        assert _rgb(points[f"points:{s}"].get_facecolor()[0][:3]) == _rgb(figures.SYSTEM_COLORS[s])
        np.testing.assert_allclose(np.sort(points[f"points:{s}"].get_offsets()[:, 1]),
                                   np.sort(per_model.loc[per_model["system"] == s, "dmae"]))
    paths = figures.save_figure(fig, "figure3_dmae", tmp_path / "figures")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["figure3_dmae.pdf", "figure3_dmae.png"]
    # reruns give byte-identical files (no dates, no random jitter)
    again = figures.save_figure(figures.figure3_dmae(per_model), "again", tmp_path / "figures")
    assert all(again[k].read_bytes() == paths[k].read_bytes() for k in ("png", "pdf"))


def test_figure3_axis_break_appears_with_an_outlier(per_model):
    with_outlier = per_model.copy()
    i = with_outlier.index[(with_outlier["system"] == "A2M2E")][0]
    with_outlier.loc[i, "dmae"] = 12.0
    fig = figures.figure3_dmae(with_outlier)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert top.get_ylim()[0] < 12.0 < top.get_ylim()[1]
    assert bottom.get_ylim()[1] < top.get_ylim()[0]
    assert bottom.get_ylim()[0] < per_model["dmae"].min()
    # forcing the choice
    assert len(figures.figure3_dmae(with_outlier, axis_break=False).axes) == 1
    assert len(figures.figure3_dmae(per_model, axis_break=True).axes) == 2
    with pytest.raises(MerError, match="axis_break"):
        figures.figure3_dmae(per_model, axis_break="yes")


def test_figure3_from_logs_and_subset(published):
    fig = figures.figure3_dmae(published, systems=["A2M2E", "A2E"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["A2M2E", "A2E"]
    with pytest.raises(MerError, match="no data"):
        figures.figure3_dmae(published, systems=["A2E", "nope"])


def test_figure4(published, tmp_path):
    fig = figures.figure4_true_vs_pred(published, seed=21)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["A2B2E", "A2M2E", "aA2B2E"]
    coll = _collections_by_gid(fig)
    g = published[(published["seed"] == 21) & (published["system"] == "A2M2E")]
    clean = coll["clean:A2M2E:tender"]
    np.testing.assert_allclose(clean.get_offsets(), g[["true_tender", "orig_tender"]].to_numpy())
    adv = coll["adversarial:A2M2E:tension"]
    np.testing.assert_allclose(adv.get_offsets(), g[["true_tension", "new_tension"]].to_numpy())
    for s in ("A2B2E", "A2M2E", "aA2B2E"):
        assert _rgb(coll[f"clean:{s}:tension"].get_edgecolor()[0][:3]) == _rgb(figures.SYSTEM_COLORS[s])
        assert _rgb(coll[f"adversarial:{s}:tender"].get_edgecolor()[0][:3]) == _rgb(figures.SYSTEM_COLORS[s])
    figures.save_figure(fig, "figure4", tmp_path)
    assert (tmp_path / "figure4.png").stat().st_size > 0 and (tmp_path / "figure4.pdf").stat().st_size > 0
    assert len(figures.figure4_true_vs_pred(published, seed=None, systems=("A2E",), emotions=("valence",)).axes) == 1
    with pytest.raises(MerError, match="seed 5"):
        figures.figure4_true_vs_pred(published, seed=5)
    with pytest.raises(MerError, match="unknown emotions"):
        figures.figure4_true_vs_pred(published, emotions=("joy",))


def test_clean_performance_figure(per_model, tmp_path):
    fig = figures.clean_performance_figure(per_model)
    assert len(fig.axes) == 2
    coll = [c for c in fig.axes[1].collections if c.get_gid()]
    assert [c.get_gid() for c in coll] == [f"points:{s}" for s in SYSTEMS]
    for c, s in zip(coll, SYSTEMS):
        assert _rgb(c.get_facecolor()[0][:3]) == _rgb(figures.SYSTEM_COLORS[s])
        np.testing.assert_allclose(np.sort(c.get_offsets()[:, 1]),
                                   np.sort(per_model.loc[per_model["system"] == s, "clean_mae"]))
    assert figures.save_figure(fig, "clean", tmp_path)["pdf"].exists()
    with pytest.raises(MerError, match="plain file name"):
        figures.save_figure(fig, "sub/clean", tmp_path)


def test_robustness_curves(tmp_path):
    rows = [{"system": s, "seed": k, "eps": e, "dmae": (i + 1) * e + 0.01 * k}
            for i, s in enumerate(("A2M2E", "A2E")) for k in (1, 2, 3) for e in (0.03, 0.1, 0.3)]
    fig = figures.robustness_curves(pd.DataFrame(rows), title="t")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["0.03", "0.1", "0.3"]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) >= 2
    # systems in the paper's order with their colours; the line is the median over seeds
    assert _rgb(lines[0].get_color()) == _rgb(figures.SYSTEM_COLORS["A2E"])
    np.testing.assert_allclose(lines[0].get_ydata(), 2 * np.array([0.03, 0.1, 0.3]) + 0.02)
    assert figures.save_figure(fig, "curves", tmp_path)["png"].exists()
    with pytest.raises(MerError, match="eps"):
        figures.robustness_curves(pd.DataFrame(rows).drop(columns="eps"))
