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
    assert "L-infinity" in ax.get_xlabel()
    l2 = figures.robustness_curves(pd.DataFrame(rows).assign(norm="l2"))
    assert "L2" in l2.axes[0].get_xlabel() and "infinity" not in l2.axes[0].get_xlabel()
    with pytest.raises(MerError, match="one norm"):
        figures.robustness_curves(pd.DataFrame(rows).assign(norm=["l2", "linf"] * 9))


def test_robustness_vs_gain_has_a_point_per_model_on_log_axes():
    pm = pd.DataFrame([{"system": s, "seed": k, "grad_l2": g * k, "dmae": 0.5 * g * k, "dmae_rel": 3.0 + k}
                       for s, g in (("A2E", 1.0), ("A2M2E", 2.0)) for k in (1, 2, 3)])
    fig = figures.robustness_vs_gain(pm)
    assert len(fig.axes) == 2
    for ax, measure in zip(fig.axes, ("dmae", "dmae_rel")):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        offsets = np.concatenate([c.get_offsets() for c in ax.collections])
        np.testing.assert_allclose(np.sort(offsets[:, 1]), np.sort(pm[measure].to_numpy()))
    with pytest.raises(MerError, match="grad_l2"):
        figures.robustness_vs_gain(pm.drop(columns="grad_l2"))


def test_figure4_seed_is_the_papers_when_available(published):
    assert figures.figure4_seed([6, 21, 42]) == 21 and figures.figure4_seed([42, 6]) == 42
    with pytest.raises(MerError, match="no seeds"):
        figures.figure4_seed([])
    assert figures.figure4_true_vs_pred(published).texts[-1].get_text() == "seed 21"


def _history() -> pd.DataFrame:
    rows = [{"system": s, "seed": k, "epoch": e, "train_emotion_mse": 0.1 / e + k,
             "train_adversarial_mse": 0.05 if e % 5 == 0 else np.nan, "valid_emotion_r": 0.1 * e}
            for s in ("aA2E", "A2E") for k in (1, 2) for e in range(1, 11)]
    return pd.DataFrame(rows)


def test_learning_curves_label_their_axes_and_skip_missing_epochs():
    fig = figures.plot_learning_curves(_history(), ["train_emotion_mse", "train_adversarial_mse", "valid_emotion_r"])
    assert len(fig.axes) == 3
    for ax, quantity in zip(fig.axes, ("train_emotion_mse", "train_adversarial_mse", "valid_emotion_r")):
        title, ylabel = figures.CURVE_LABELS[quantity]
        assert ax.get_title() == title and ax.get_ylabel() == ylabel != "value" and ax.get_xlabel() == "epoch"
    adversarial = [ln for ln in fig.axes[1].get_lines() if len(ln.get_xdata())]
    assert adversarial and all(list(ln.get_xdata()) == [5, 10] for ln in adversarial)
    legend = fig.axes[-1].get_legend()
    assert legend is not None and fig.axes[0].get_legend() is None
    assert [t.get_text() for t in legend.get_texts()][1:3] == ["A2E", "aA2E"]
    fig = figures.plot_learning_curves(_history(), ["valid_emotion_r"], hue_order=["aA2E", "A2E"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][1:3] == ["aA2E", "A2E"]
    with pytest.raises(MerError, match="missing columns"):
        figures.plot_learning_curves(_history(), ["valid_midlevel_r"])


def test_per_target_and_training_cost_bars_use_system_colours():
    per_target = pd.DataFrame([{"system": s, "seed": k, "target": t, "r": 0.5 + 0.1 * k}
                               for s in ("A2M2E", "A2E") for k in (1, 2) for t in ("valence", "tender")])
    ax = figures.plot_per_target_r(per_target, "test r").axes[0]
    assert ax.get_ylabel() == "test r"
    assert _rgb(ax.patches[0].get_facecolor()[:3]) == _rgb(figures.SYSTEM_COLORS["A2E"])
    cost = pd.DataFrame({"system": ["A2M2E", "A2M2E", "aA2E", "aA2E"], "passes": [10, 12, 20, 24]})
    ax = figures.plot_training_passes(cost).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["aA2E", "A2M2E"]
    assert ax.get_ylabel() == "forward + backward example passes"
    assert sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height()) == [11.0, 22.0]


def test_spectrogram_row_shares_one_colour_scale():
    images = np.stack([np.full((30, 12), -1.0), np.linspace(0, 3, 360).reshape(30, 12)])
    fig = figures.plot_spectrogram_row(images, ["a", "b"], fps=10.0)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 2 and [ax.get_title() for ax in panels] == ["a", "b"]
    assert all(ax.get_images()[0].get_clim() == (-1.0, 3.0) for ax in panels)
    assert panels[0].get_xlim() == (0.0, 3.0)
    assert any(ax.get_ylabel() == figures.STANDARDISED_LABEL for ax in fig.axes)
    with pytest.raises(MerError, match="2 images and 1 titles"):
        figures.plot_spectrogram_row(images, ["a"], fps=10.0)


def test_attack_example_shows_clean_adversarial_and_a_symmetric_perturbation():
    clean = np.zeros((30, 12))
    delta = np.linspace(-0.5, 2.0, 360).reshape(30, 12)
    fig = figures.plot_attack_example(clean, delta, 10.0, "#001", snr_db=3.25)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["#001: clean", "#001: adversarial", "#001: perturbation, SNR 3.2 dB"]
    assert panels[0].get_images()[0].get_clim() == panels[1].get_images()[0].get_clim() == (-0.5, 2.0)
    assert panels[2].get_images()[0].get_clim() == (-2.0, 2.0)
    assert {ax.get_ylabel() for ax in fig.axes} >= {figures.STANDARDISED_LABEL, "perturbation (SD)"}
    with pytest.raises(MerError, match="differ in shape"):
        figures.plot_attack_example(clean, delta[:10], 10.0, "#001")


def test_unit_moves_box_plot_says_what_changes():
    moves = pd.DataFrame({"unit": ["melodiousness", "minorness"] * 3, "change": [0.1, -0.2, 0.3, 0.0, 0.2, 0.5]})
    ax = figures.plot_unit_moves(moves).axes[0]
    assert "adversarial − clean" in ax.get_ylabel() and "rating / 10" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["melodiousness", "minorness"]


def test_per_target_bars_follow_the_target_order_and_drop_a_lone_legend():
    per_target = pd.DataFrame([{"system": "A2M2E", "seed": 1, "target": t, "r": 0.5}
                               for t in ("tonal_stability", "articulation", "melodiousness")])
    ax = figures.plot_per_target_r(per_target, "r").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["melodiousness", "articulation", "tonal_stability"]
    assert ax.get_legend() is None


def test_waveform_curves_one_panel_per_kind_attack_first():
    rows = [{"system": s, "kind": k, "snr_db": snr, "estimate": e, "ci_low": e - 0.01, "ci_high": e + 0.01}
            for s in ("A2M2E", "A2E") for k in ("white", "attack") for snr in (40.0, 20.0)
            for e in [(0.1 if k == "attack" else 0.001) * (50 - snr) / 10]]
    fig = figures.waveform_curves(pd.DataFrame(rows), title="t")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["waveform attack", "white noise"]
    assert [line.get_label() for line in axes[0].get_lines()][:2] == ["A2E", "A2M2E"]  # the paper's order
    assert axes[0].xaxis_inverted() and axes[0].get_ylim() == axes[1].get_ylim()
    plt.close(fig)
    with pytest.raises(MerError, match="ci_low"):
        figures.waveform_curves(pd.DataFrame(rows).drop(columns="ci_low"))


def test_explanation_panels_outline_each_rankings_top_segments():
    from mer_lib.analysis.explanations import segment_mask

    mask = segment_mask((30, 16))
    scores = {"oracle": np.arange(20.0), "lime": -np.arange(20.0)}
    fig = figures.plot_explanations(np.random.default_rng(0).standard_normal((30, 16)), mask, scores, 31.3, "x")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["x: perturbation", "oracle", "lime"]
    assert np.array_equal(figures.segment_image(scores["oracle"], mask), mask.astype(float))
    assert len(axes[1].collections) == 1 and not axes[0].collections  # the top-3 outline on the ranking panels only
    plt.close(fig)


def test_recovery_curves_one_panel_per_system_one_line_per_ranking():
    rows = [{"system": s, "seed": seed, "ranking": r, "k": k, "recovery": 0.1 * k + 0.01 * seed}
            for s in ("A2E", "A2M2E") for seed in range(3) for r in ("oracle", "lime") for k in (1, 3, 5)]
    fig = figures.plot_recovery_curves(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == ["A2E", "A2M2E"]
    line = fig.axes[0].lines[0]
    assert line.get_ydata() == pytest.approx([0.11, 0.31, 0.51])  # the mean over the models
    plt.close(fig)
