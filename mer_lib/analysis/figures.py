"""The paper's figures (protocol §7) and the notebooks' other plots, drawn from attack logs or per-model metrics.

Each system keeps one colour (:data:`SYSTEM_COLORS`). Functions return the :class:`matplotlib.figure.Figure`
without changing global matplotlib state; :func:`save_figure` writes PNG and PDF atomically.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from mer_lib import artifacts
from mer_lib.analysis.explanations import top_k
from mer_lib.analysis.stats import t_interval
from mer_lib.attacks import logs as attack_logs
from mer_lib.config import EMOTIONS, MIDLEVEL, SYSTEM_REGISTRY, TARGET_SCALE
from mer_lib.errors import MerError


def use_style() -> None:
    """The project's plotting style (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 150, "figure.autolayout": False})


def plot_spectrogram(spec: np.ndarray, ax=None, fps: float = 31.3, title: str | None = None,
                     cmap: str = "magma", **imshow_kw):
    """Show a ``(frames, bands)`` spectrogram with time (s) on x and band index on y."""
    ax = ax or plt.gca()
    extent = (0.0, spec.shape[0] / fps, 0, spec.shape[1])
    im = ax.imshow(spec.T, origin="lower", aspect="auto", extent=extent, cmap=cmap, **imshow_kw)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("band (24 per octave)")
    ax.grid(False)
    if title:
        ax.set_title(title)
    return im


def plot_target_distributions(table: pd.DataFrame):
    """Histograms of the 7 mid-level and the 8 emotion targets on their rating scales."""
    long = (table[list(MIDLEVEL) + list(EMOTIONS)] * TARGET_SCALE).melt(var_name="target", value_name="rating")
    long["kind"] = np.where(long["target"].isin(MIDLEVEL), "mid-level (1-10)", "emotion (1-9)")
    g = sns.displot(long, x="rating", col="target", col_wrap=5, hue="kind", bins=20, height=1.9,
                    aspect=1.3, facet_kws={"sharey": False}, legend=True)
    g.set_titles("{col_name}")
    return g


def plot_correlation_pair(corr: pd.DataFrame, reference: pd.DataFrame, left_title: str,
                          right_title: str = "real data (values quoted in protocol §2.2)"):
    """Two emotion x feature heatmaps side by side, on one colour scale."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, mat, title in ((axes[0], corr, left_title), (axes[1], reference, right_title)):
        sns.heatmap(mat, ax=ax, vmin=-1, vmax=1, cmap="vlag", annot=True, fmt=".2f",
                    cbar=ax is axes[1], annot_kws={"size": 8})
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    return fig


#: One colour per system (the registry's, :class:`mer_lib.config.SystemInfo`; seaborn's "colorblind" palette: a hue
#: family per plain / adversarially trained pair, green for the interpretable A2M2E).
SYSTEM_COLORS: dict[str, str] = {name: s.color for name, s in SYSTEM_REGISTRY.items()}


#: Colours handed out, in order, to systems not in :data:`SYSTEM_COLORS`.
_SPARE_COLORS: tuple[str, ...] = ("#cc78bc", "#ca9161", "#949494", "#fbafe4", "#ece133")


def system_colors(systems: Iterable[str]) -> dict[str, str]:
    """``{system: hex colour}`` in :func:`mer_lib.attacks.logs.system_order`; unknown systems cycle spare colours."""
    out: dict[str, str] = {}
    spare = 0
    for s in attack_logs.system_order(systems):
        if s in SYSTEM_REGISTRY:
            out[s] = SYSTEM_REGISTRY[s].color
        else:
            out[s] = _SPARE_COLORS[spare % len(_SPARE_COLORS)]
            spare += 1
    return out


def _spread(n: int, width: float = 0.22) -> np.ndarray:
    """Deterministic horizontal offsets for ``n`` points (no random jitter)."""
    return np.zeros(1) if n == 1 else np.linspace(-width, width, n)


def _per_model(data: pd.DataFrame, column: str) -> pd.DataFrame:
    if not isinstance(data, pd.DataFrame):
        raise MerError(f"expected a pandas DataFrame, got {type(data).__name__}")
    if column in data.columns and "number" not in data.columns:
        missing = [c for c in ("system", "seed") if c not in data.columns]
        if missing:
            raise MerError(f"per-model table: missing columns {missing}; found {list(data.columns)}")
        return data
    return attack_logs.per_model_metrics(data)


def _select_systems(available: Iterable[str], systems: Sequence[str] | None) -> list[str]:
    present = attack_logs.system_order(available)
    if systems is None:
        return present
    missing = [s for s in systems if s not in present]
    if missing:
        raise MerError(f"systems {missing} have no data; present: {present}")
    return list(systems)


# --------------------------------------------------------------------------- Figure 3
def axis_break_limits(values: Mapping[str, Sequence[float]], ratio: float = 1.0) -> tuple[float, float] | None:
    """Decide whether a box plot needs an axis break, and where.

    ``core`` spans all boxes' 1.5-IQR whiskers. A value more than ``ratio * core`` above the core would squash the
    boxes (at ``ratio=1`` into less than half the axis); the lower panel then ends at ``top + ratio * core``, with
    no value in the gap. Only high outliers count: attacks raise the error.

    Returns
    -------
    (float, float) or None
        ``(highest value of the lower panel, lowest value of the upper panel)``, or None if no break is needed.
    """
    if ratio <= 0:
        raise MerError(f"axis_break_limits: ratio must be positive, got {ratio}")
    arrays = [np.asarray(v, dtype=np.float64) for v in values.values()]
    arrays = [a[~np.isnan(a)] for a in arrays if a.size]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return None
    lows, highs = [], []
    for a in arrays:
        q1, q3 = np.quantile(a, [0.25, 0.75])
        iqr = q3 - q1
        highs.append(a[a <= q3 + 1.5 * iqr].max())
        lows.append(a[a >= q1 - 1.5 * iqr].min())
    core_lo, core_hi = min(lows), max(highs)
    span = core_hi - core_lo
    if span <= 0:
        span = max(abs(core_hi), 1e-12)
    cut = core_hi + ratio * span
    everything = np.concatenate(arrays)
    above = everything[everything > cut]
    if above.size == 0:
        return None
    return float(everything[everything <= cut].max()), float(above.min())


def _padded(lo: float, hi: float, frac: float = 0.08) -> tuple[float, float]:
    pad = (hi - lo) * frac if hi > lo else max(abs(hi), 1.0) * frac
    return lo - pad, hi + pad


def _draw_boxes(ax, per_system: list[np.ndarray], systems: list[str], colors: dict[str, str]) -> None:
    positions = np.arange(len(systems))
    bp = ax.boxplot(per_system, positions=positions, widths=0.6, whis=1.5, showfliers=False,
                    patch_artist=True, tick_labels=systems, zorder=2,
                    medianprops={"color": "black", "linewidth": 1.5})
    for patch, s in zip(bp["boxes"], systems):
        patch.set_facecolor(colors[s])
        patch.set_alpha(0.55)
        patch.set_edgecolor("0.2")
        patch.set_gid(f"box:{s}")
    for i, (vals, s) in enumerate(zip(per_system, systems)):
        ax.scatter(i + _spread(len(vals)), vals, s=22, color=colors[s], edgecolor="black", linewidth=0.6,
                   zorder=3, gid=f"points:{s}")


def figure3_dmae(per_model: pd.DataFrame, axis_break: bool | str = "auto", ratio: float = 1.0,
                 systems: Sequence[str] | None = None, figsize: tuple[float, float] = (6.0, 4.0),
                 title: str | None = None) -> Figure:
    """Figure 3: dMAE per model, one box per system, every model a point, with an optional axis break.

    Parameters
    ----------
    per_model : pandas.DataFrame
        :func:`mer_lib.attacks.logs.per_model_metrics` output (or tidy attack logs).
    axis_break : {"auto", True, False}
        ``"auto"``: break where :func:`axis_break_limits` says so (with ``ratio``); ``True``: always (without an
        outlier, the largest value goes up); ``False``: never.
    systems : sequence of str, optional
        Systems and order (default: all present, paper order).

    Returns
    -------
    matplotlib.figure.Figure
        One axes, or two stacked axes sharing x (upper: outliers) when broken.
    """
    if axis_break not in ("auto", True, False):
        raise MerError(f"axis_break={axis_break!r}: expected 'auto', True or False")
    pm = _per_model(per_model, "dmae")
    systems = _select_systems(pm["system"], systems)
    colors = system_colors(systems)
    per_system = [pm.loc[pm["system"] == s, "dmae"].to_numpy(np.float64) for s in systems]
    limits = axis_break_limits(dict(zip(systems, per_system)), ratio) if axis_break is not False else None
    if axis_break is True and limits is None:
        allv = np.sort(np.concatenate(per_system))
        if allv.size >= 2:
            limits = (float(allv[-2]), float(allv[-1]))
    ylabel = "dMAE (MAE after attack − clean MAE)"
    if limits is None:
        fig, ax = plt.subplots(figsize=figsize)
        _draw_boxes(ax, per_system, systems, colors)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("system")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        return fig
    low_top, high_bottom = limits
    allv = np.concatenate(per_system)
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=figsize,
                                      gridspec_kw={"height_ratios": [1, 3], "hspace": 0.08})
    for ax in (top, bottom):
        _draw_boxes(ax, per_system, systems, colors)
    bottom.set_ylim(*_padded(float(allv.min()), low_top))
    top.set_ylim(*_padded(high_bottom, float(allv.max()), frac=0.25))
    top.spines["bottom"].set_visible(False)
    bottom.spines["top"].set_visible(False)
    top.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    # short diagonal strokes marking the break, on both y spines
    kw = dict(marker=[(-1, -0.5), (1, 0.5)], markersize=10, linestyle="none", color="k", mec="k", mew=1,
              clip_on=False)
    top.plot([0, 1], [0, 0], transform=top.transAxes, **kw)
    bottom.plot([0, 1], [1, 1], transform=bottom.transAxes, **kw)
    bottom.set_xlabel("system")
    fig.supylabel(ylabel, fontsize="medium")
    if title:
        top.set_title(title)
    fig.subplots_adjust(left=0.14, right=0.97, top=0.92 if title else 0.96, bottom=0.13)
    return fig


# --------------------------------------------------------------------------- Figure 4
#: Training seed of the models in the paper's Figure 4.
FIGURE4_SEED = 21


def figure4_seed(seeds: Iterable[int]) -> int:
    """:data:`FIGURE4_SEED` if among ``seeds``, else the first of them; ``MerError`` if ``seeds`` is empty."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise MerError("figure4_seed: no seeds")
    return FIGURE4_SEED if FIGURE4_SEED in seeds else seeds[0]


def figure4_true_vs_pred(logs: pd.DataFrame, seed: int | None = FIGURE4_SEED,
                         systems: Sequence[str] = ("A2B2E", "A2M2E", "aA2B2E"),
                         emotions: Sequence[str] = ("tension", "tender"),
                         panel_size: float = 2.8) -> Figure:
    """Figure 4: true vs predicted ratings, clean (``x``) and after the attack (hollow ``o``), in a grid.

    Parameters
    ----------
    logs : pandas.DataFrame
        Tidy attack logs (``system``, ``seed``, ``true_*``, ``orig_*``, ``new_*``).
    seed : int or None
        Training seed of the models shown; None: :func:`figure4_seed` of the seeds present.
    systems, emotions : sequence of str
        Columns and rows of the grid (emotions from :data:`mer_lib.config.EMOTIONS`).

    Returns
    -------
    matplotlib.figure.Figure
        x: true rating / 10, y: prediction, dashed identity line; panels of a row share y.

    Raises
    ------
    MerError
        For an unknown emotion or a system/seed without logs.
    """
    bad = [e for e in emotions if e not in EMOTIONS]
    if bad:
        raise MerError(f"unknown emotions {bad}; expected names from {list(EMOTIONS)}")
    need = ["system", "seed", *[f"{p}_{e}" for p in ("true", "orig", "new") for e in emotions]]
    missing = [c for c in need if c not in logs.columns]
    if missing:
        raise MerError(f"attack logs: missing columns {missing}")
    if seed is None:
        seed = figure4_seed(sorted(logs["seed"].unique()))
    sub = logs[logs["seed"] == seed]
    absent = [s for s in systems if s not in set(sub["system"])]
    if absent:
        raise MerError(f"no attack logs for systems {absent} with seed {seed}; "
                       f"systems with that seed: {attack_logs.system_order(sub['system'])}")
    colors = system_colors(systems)
    fig, axes = plt.subplots(len(emotions), len(systems), sharex=True, sharey="row", squeeze=False,
                             figsize=(panel_size * len(systems) + 0.6, panel_size * len(emotions) + 0.5))
    for i, emotion in enumerate(emotions):
        for j, system in enumerate(systems):
            ax = axes[i, j]
            g = sub[sub["system"] == system]
            true = g[f"true_{emotion}"].to_numpy(np.float64)
            ax.axline((0.0, 0.0), slope=1.0, color="0.5", linestyle="--", linewidth=1, zorder=1)
            ax.scatter(true, g[f"orig_{emotion}"], marker="x", s=28, color=colors[system], linewidth=1.2,
                       zorder=3, gid=f"clean:{system}:{emotion}")
            ax.scatter(true, g[f"new_{emotion}"], marker="o", s=26, facecolors="none",
                       edgecolors=colors[system], linewidth=1.1, zorder=2, gid=f"adversarial:{system}:{emotion}")
            if i == 0:
                ax.set_title(system, color=colors[system], fontweight="bold")
            if j == 0:
                ax.set_ylabel(f"{emotion}: predicted")
            if i == len(emotions) - 1:
                ax.set_xlabel("true rating / 10")
    handles = [Line2D([], [], marker="x", linestyle="none", color="0.2", label="clean"),
               Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", color="0.2",
                      label="adversarial"),
               Line2D([], [], linestyle="--", color="0.5", label="identity")]
    fig.legend(handles=handles, loc="upper center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle(f"seed {seed}", x=0.99, ha="right", fontsize="small", y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


# --------------------------------------------------------------------------- clean performance
def clean_performance_figure(per_model: pd.DataFrame, systems: Sequence[str] | None = None,
                             figsize: tuple[float, float] = (9.0, 3.6)) -> Figure:
    """Table 1 as a figure: clean average Pearson r (left) and MAE (right), a point per seed, a bar at the mean.

    Parameters
    ----------
    per_model : pandas.DataFrame
        :func:`mer_lib.attacks.logs.per_model_metrics` output (or tidy attack logs).
    systems : sequence of str, optional
        Systems and order (default: all present, paper order).
    """
    pm = _per_model(per_model, "clean_r")
    if "clean_mae" not in pm.columns:
        raise MerError("per-model table: missing column 'clean_mae'")
    systems = _select_systems(pm["system"], systems)
    colors = system_colors(systems)
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    for ax, column, label in ((axes[0], "clean_r", "average Pearson r (clean)"),
                              (axes[1], "clean_mae", "MAE (clean)")):
        for i, s in enumerate(systems):
            vals = pm.loc[pm["system"] == s, column].to_numpy(np.float64)
            ax.scatter(i + _spread(len(vals), 0.18), vals, s=24, color=colors[s], edgecolor="black",
                       linewidth=0.5, zorder=3, gid=f"points:{s}")
            ax.hlines(np.nanmean(vals), i - 0.32, i + 0.32, color="black", linewidth=2, zorder=4)
        ax.set_xticks(np.arange(len(systems)), systems)
        ax.set_xlim(-0.6, len(systems) - 0.4)
        ax.set_ylabel(label)
        ax.set_xlabel("system")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- bounded attacks
#: Axis labels of the per-model robustness measures.
MEASURE_LABELS: dict[str, str] = {"dmae": "dMAE", "dmae_rel": "dMAE / clean prediction spread",
                                  "grad_l2": "input-gradient norm (gain)", "clean_spread": "clean prediction spread"}


#: Axis names of the bounded attacks' norms.
NORM_LABELS: dict[str, str] = {"linf": "L-infinity", "l2": "L2"}


def robustness_curves(sweep: pd.DataFrame, title: str | None = None,
                      figsize: tuple[float, float] = (6.0, 4.0), quantity: str = "dmae") -> Figure:
    """Damage against the budget eps of a bounded attack of one norm, one line per system, log eps axis.

    Parameters
    ----------
    sweep : pandas.DataFrame
        Per-model metrics with ``eps`` and optionally ``norm`` (:func:`mer_lib.attacks.stage.bounded_sweep`).
    quantity : str
        ``"dmae"`` or ``"dmae_rel"``.

    Returns
    -------
    matplotlib.figure.Figure
        The median over each system's seeds (line) and their range (band).
    """
    missing = [c for c in ("system", "eps", quantity) if c not in sweep.columns]
    if missing:
        raise MerError(f"robustness curves: missing columns {missing}; found {list(sweep.columns)}")
    norms = sweep["norm"].unique().tolist() if "norm" in sweep.columns else ["linf"]
    if len(norms) != 1 or norms[0] not in NORM_LABELS:
        raise MerError(f"robustness curves: expected one norm of {list(NORM_LABELS)}, got {norms}")
    systems = attack_logs.system_order(sweep["system"])
    fig, ax = plt.subplots(figsize=figsize)
    sns.lineplot(sweep, x="eps", y=quantity, hue="system", hue_order=systems, estimator="median",
                 errorbar=("pi", 100), marker="o", ax=ax, palette=system_colors(systems))
    ax.set(xscale="log", xlabel=f"eps ({NORM_LABELS[norms[0]]} bound, normalised units)",
           ylabel=MEASURE_LABELS.get(quantity, quantity))
    eps = np.sort(sweep["eps"].unique())
    ax.set_xticks(eps, [f"{e:g}" for e in eps])  # the swept values, not log-scale minor labels
    ax.xaxis.set_minor_locator(NullLocator())
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def robustness_vs_gain(per_model: pd.DataFrame, gain: str = "grad_l2", measures: Sequence[str] = ("dmae", "dmae_rel"),
                       figsize: tuple[float, float] = (10.0, 3.8)) -> Figure:
    """Each model's robustness ``measures`` against its ``gain``, one log-log panel per measure.

    ``gain``: a column such as :func:`mer_lib.models.gain.model_gains`' ``grad_l2`` or ``clean_spread``; measures
    must be positive. A measure that only restates the gain lies on one rising line across all systems.
    """
    missing = [c for c in ("system", gain, *measures) if c not in per_model.columns]
    if missing:
        raise MerError(f"robustness vs gain: missing columns {missing}; found {list(per_model.columns)}")
    systems = attack_logs.system_order(per_model["system"])
    fig, axes = plt.subplots(1, len(measures), figsize=figsize, squeeze=False)
    for ax, measure in zip(axes[0], measures):
        sns.scatterplot(per_model, x=gain, y=measure, hue="system", hue_order=systems, palette=system_colors(systems),
                        s=40, edgecolor="black", linewidth=0.5, ax=ax, legend=ax is axes[0][-1])
        ax.set(xscale="log", yscale="log", xlabel=MEASURE_LABELS.get(gain, gain),
               ylabel=MEASURE_LABELS.get(measure, measure))
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def waveform_curves(curves: pd.DataFrame, title: str | None = None,
                    figsize: tuple[float, float] = (10.0, 3.8)) -> Figure:
    """dMAE against the SNR of the waveform attack, next to noise at the same SNRs, one panel per kind.

    ``curves``: :func:`mer_lib.analysis.robustness.robustness_curves` of the waveform results. Each system is a line
    with its CI as a band; the SNR axis runs from the quietest perturbation (left) to the loudest.
    """
    missing = [c for c in ("system", "kind", "snr_db", "estimate", "ci_low", "ci_high") if c not in curves.columns]
    if missing:
        raise MerError(f"waveform curves: missing columns {missing}; found {list(curves.columns)}")
    kinds = ["attack", *sorted(k for k in curves["kind"].unique() if k != "attack")]
    systems = attack_logs.system_order(curves["system"])
    colors = system_colors(systems)
    fig, axes = plt.subplots(1, len(kinds), figsize=figsize, sharey=True, squeeze=False, layout="constrained")
    for ax, kind in zip(axes[0], kinds):
        sub = curves[curves["kind"] == kind]
        for system in systems:
            line = sub[sub["system"] == system].sort_values("snr_db")
            ax.plot(line["snr_db"], line["estimate"], marker="o", color=colors[system], label=system)
            ax.fill_between(line["snr_db"], line["ci_low"], line["ci_high"], color=colors[system], alpha=0.15)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set(xlabel="SNR of the perturbation (dB)", title="waveform attack" if kind == "attack" else f"{kind} noise")
        ax.set_xticks(sorted(sub["snr_db"].unique()))
        ax.invert_xaxis()
    axes[0, 0].set_ylabel("dMAE")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- saving
def save_figure(fig: Figure, stem: str, figures_dir: str | os.PathLike = "figures",
                formats: Sequence[str] = ("png", "pdf"), dpi: int = 150) -> dict[str, Path]:
    """Write a figure as ``<figures_dir>/<stem>.<format>`` for each of ``formats``, atomically (folders created).

    Returns
    -------
    dict
        ``{format: path}``.

    Raises
    ------
    MerError
        If ``stem`` is not a plain file name.
    """
    if not stem or Path(stem).name != stem:
        raise MerError(f"save_figure: stem must be a plain file name without folders, got {stem!r}")
    out = {}
    for fmt in formats:
        path = Path(figures_dir) / f"{stem}.{fmt}"
        # no creation date in the PDF, so that reruns give identical files
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        with artifacts.atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
        out[fmt] = path
    return out


# --------------------------------------------------------------------------- training
#: Panel title and y-axis label of each learning-curve quantity (``history.csv`` columns).
CURVE_LABELS: dict[str, tuple[str, str]] = {
    "train_loss": ("training loss", "loss (training objective)"),
    "train_emotion_mse": ("training: emotion MSE", "MSE (ratings / 10, squared)"),
    "train_midlevel_mse": ("training: mid-level MSE", "MSE (ratings / 10, squared)"),
    "train_adversarial_mse": ("adversarial updates: emotion MSE", "MSE (ratings / 10, squared)"),
    "valid_emotion_r": ("validation: mean r over the emotions", "Pearson r"),
    "valid_midlevel_r": ("validation: mean r of the bottleneck units", "Pearson r"),
    "valid_emotion_mse": ("validation: emotion MSE", "MSE (ratings / 10, squared)"),
    "valid_score": ("validation score (early stopping)", "score"),
}


def plot_learning_curves(history: pd.DataFrame, quantities: Sequence[str], hue_order: Sequence[str] | None = None,
                         panel_size: tuple[float, float] = (4.2, 3.2)) -> Figure:
    """Learning curves: one panel per quantity, one line per (system, seed); colour: system, line style: seed.

    Parameters
    ----------
    history : pandas.DataFrame
        :func:`mer_lib.models.tables.history_table` (``system``, ``seed``, ``epoch`` and ``history.csv`` columns).
    quantities : sequence of str
        Columns to draw (labels from :data:`CURVE_LABELS`); epochs where one is missing are left out.
    hue_order : sequence of str, optional
        Systems and order (default: all present, paper order).
    panel_size : (float, float)
        One panel's width and height in inches.
    """
    missing = [c for c in ("system", "seed", "epoch", *quantities) if c not in history.columns]
    if missing:
        raise MerError(f"learning curves: missing columns {missing}; found {list(history.columns)}")
    systems = list(hue_order) if hue_order is not None else attack_logs.system_order(history["system"])
    fig, axes = plt.subplots(1, len(quantities), squeeze=False,
                             figsize=(panel_size[0] * len(quantities) + 1.2, panel_size[1]))
    for i, (ax, quantity) in enumerate(zip(axes[0], quantities)):
        sns.lineplot(history.dropna(subset=[quantity]), x="epoch", y=quantity, hue="system", style="seed",
                     hue_order=systems, palette=system_colors(systems), marker="o", markersize=4,
                     ax=ax, legend=i == len(quantities) - 1)
        title, ylabel = CURVE_LABELS.get(quantity, (quantity, quantity))
        ax.set(title=title, ylabel=ylabel, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot_per_target_r(per_target: pd.DataFrame, ylabel: str, figsize: tuple[float, float] = (8.0, 3.4)) -> Figure:
    """Test Pearson r per target (:func:`mer_lib.models.tables.per_target_r`): bars at the mean over seeds, SD whiskers.

    Targets in the order of ``EMOTIONS`` then ``MIDLEVEL``; a legend only for several systems.
    """
    systems = attack_logs.system_order(per_target["system"])
    present = set(per_target["target"])
    order = [t for t in (*EMOTIONS, *MIDLEVEL) if t in present] + sorted(present - set(EMOTIONS) - set(MIDLEVEL))
    fig, ax = plt.subplots(figsize=figsize)
    sns.barplot(per_target, x="target", y="r", hue="system", order=order, hue_order=systems,
                palette=system_colors(systems), errorbar="sd", saturation=1.0, legend=len(systems) > 1, ax=ax)
    if len(systems) > 1:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set(xlabel="", ylabel=ylabel)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_training_passes(cost: pd.DataFrame, figsize: tuple[float, float] = (6.0, 3.6)) -> Figure:
    """Training cost (:func:`mer_lib.models.tables.cost_table`): forward + backward example passes, mean and SD."""
    systems = attack_logs.system_order(cost["system"])
    fig, ax = plt.subplots(figsize=figsize)
    sns.barplot(cost, x="system", y="passes", hue="system", order=systems, hue_order=systems,
                palette=system_colors(systems), errorbar="sd", saturation=1.0, ax=ax)
    ax.set(xlabel="", ylabel="forward + backward example passes")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- spectrograms
#: Colour-bar label of standardised spectrograms (the model's input).
STANDARDISED_LABEL = "standardised log magnitude (SD)"


def plot_spectrogram_row(images: Sequence[np.ndarray], titles: Sequence[str], fps: float,
                         figsize: tuple[float, float] = (12.0, 3.2)) -> Figure:
    """Standardised ``(frames, bands)`` spectrograms side by side, one title each, one colour scale and colour bar."""
    if len(images) != len(titles) or len(images) == 0:
        raise MerError(f"spectrogram row: {len(images)} images and {len(titles)} titles")
    vmin = min(float(np.min(im)) for im in images)
    vmax = max(float(np.max(im)) for im in images)
    fig, axes = plt.subplots(1, len(images), figsize=figsize, sharey=True, squeeze=False, layout="constrained")
    for ax, image, title in zip(axes[0], images, titles):
        shown = plot_spectrogram(image, ax=ax, fps=fps, title=title, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.title.set_fontsize(9)
    for ax in axes[0, 1:]:
        ax.set_ylabel("")
    fig.colorbar(shown, ax=list(axes[0]), label=STANDARDISED_LABEL, fraction=0.03)
    return fig


def plot_attack_example(clean: np.ndarray, delta: np.ndarray, fps: float, label: str,
                        snr_db: float | None = None, figsize: tuple[float, float] = (12.0, 3.2)) -> Figure:
    """A clean ``(frames, bands)`` standardised spectrogram, its adversarial version and the perturbation ``delta``.

    Clean and adversarial share a colour scale; the perturbation's is symmetric around 0, its title shows ``snr_db``.
    """
    if clean.shape != delta.shape:
        raise MerError(f"attack example: clean {clean.shape} and perturbation {delta.shape} differ in shape")
    adversarial = clean + delta
    vmin, vmax = float(min(clean.min(), adversarial.min())), float(max(clean.max(), adversarial.max()))
    lim = max(float(np.abs(delta).max()), 1e-12)
    fig, axes = plt.subplots(1, 3, figsize=figsize, sharey=True, layout="constrained")
    snr = "" if snr_db is None else f", SNR {snr_db:.1f} dB"
    for ax, image, title in ((axes[0], clean, "clean"), (axes[1], adversarial, "adversarial")):
        shown = plot_spectrogram(image, ax=ax, fps=fps, title=f"{label}: {title}", vmin=vmin, vmax=vmax,
                                 interpolation="nearest")
    moved = plot_spectrogram(delta, ax=axes[2], fps=fps, title=f"{label}: perturbation{snr}", cmap="vlag",
                             vmin=-lim, vmax=lim, interpolation="nearest")
    for ax in axes:
        ax.title.set_fontsize(9)
    for ax in axes[1:]:
        ax.set_ylabel("")
    fig.colorbar(shown, ax=axes[1], label=STANDARDISED_LABEL)
    fig.colorbar(moved, ax=axes[2], label="perturbation (SD)")
    return fig


# --------------------------------------------------------------------------- bottleneck units
def plot_unit_moves(moves: pd.DataFrame, system: str = "A2M2E", figsize: tuple[float, float] = (8.0, 3.6)) -> Figure:
    """How far an attack moved each bottleneck unit: one box per unit over excerpts and seeds.

    ``moves``: :func:`mer_lib.analysis.bottleneck.unit_moves` with ``per="excerpt"``. y: adversarial minus clean
    activation, in the units of the mid-level annotations (ratings / 10).
    """
    fig, ax = plt.subplots(figsize=figsize)
    sns.boxplot(moves, x="unit", y="change", color=system_colors([system])[system], saturation=1.0, ax=ax)
    ax.axhline(0.0, color="0.3", linewidth=0.8, zorder=0)
    ax.set(xlabel="", ylabel="adversarial − clean activation\n(mid-level rating / 10)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- explanations (notebook 11)
def segment_image(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A ``(frames, bands)`` image of per-segment ``scores`` ``(S,)`` over the segment ``mask``."""
    return np.asarray(scores, np.float64)[np.asarray(mask)]


def plot_explanations(delta: np.ndarray, mask: np.ndarray, scores: Mapping[str, np.ndarray], fps: float,
                      label: str, figsize: tuple[float, float] | None = None) -> Figure:
    """A perturbation's energy per segment next to each ranking's segment scores for one excerpt, grid drawn.

    ``delta``: ``(frames, bands)``; ``scores``: ranking name -> ``(S,)`` (the oracle's is the energy). Each panel
    has its own symmetric colour scale (scores of different methods are in different units); the 3 top segments
    of each panel are outlined.
    """
    panels = {"perturbation": delta, **{name: segment_image(s, mask) for name, s in scores.items()}}
    fig, axes = plt.subplots(1, len(panels), figsize=figsize or (3.0 * len(panels), 3.0), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, (name, image) in zip(axes[0], panels.items()):
        lim = max(float(np.abs(image).max()), 1e-12)
        plot_spectrogram(image, ax=ax, fps=fps, title=f"{label}: {name}" if name == "perturbation" else name,
                         cmap="vlag", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.title.set_fontsize(9)
        if name != "perturbation":
            chosen = top_k(np.asarray(scores[name])[None], 3)[0]
            ax.contour(np.isin(mask, np.flatnonzero(chosen)).T.astype(float), levels=[0.5], colors="k",
                       linewidths=1.2, extent=(0.0, mask.shape[0] / fps, 0, mask.shape[1]), origin="lower")
    for ax in axes[0, 1:]:
        ax.set_ylabel("")
    return fig


def plot_recovery_curves(per_model: pd.DataFrame, rankings: Sequence[str] | None = None,
                         figsize: tuple[float, float] | None = None, title: str | None = None) -> Figure:
    """Recovery of the attack's damage against k, one panel per system, one line per ranking.

    ``per_model``: ``system``, ``seed``, ``ranking``, ``k``, ``recovery`` (a model's mean over its excerpts); the
    line is the mean over models, the band its 95 % t-interval (seaborn ``("ci", 95)`` is a bootstrap; here the
    interval of :func:`mer_lib.analysis.stats.t_interval` is drawn).
    """
    systems = attack_logs.system_order(per_model["system"])
    rankings = list(rankings or per_model["ranking"].unique())
    fig, axes = plt.subplots(1, len(systems), figsize=figsize or (2.8 * len(systems), 3.2), sharey=True,
                             squeeze=False, layout="constrained")
    palette = dict(zip(rankings, sns.color_palette("colorblind", len(rankings))))
    for ax, system in zip(axes[0], systems):
        for ranking in rankings:
            g = per_model[(per_model["system"] == system) & (per_model["ranking"] == ranking)]
            if g.empty:
                continue
            stats = g.groupby("k")["recovery"].agg(["mean", lambda v: t_interval(v.to_numpy())])
            ks = stats.index.to_numpy()
            ax.plot(ks, stats["mean"], marker="o", color=palette[ranking], label=ranking)
            lo, hi = zip(*stats.iloc[:, 1])
            ax.fill_between(ks, lo, hi, color=palette[ranking], alpha=0.15, linewidth=0)
        ax.set(title=system, xlabel="k (segments re-inserted)", xticks=sorted(per_model["k"].unique()))
        ax.title.set_fontsize(10)
    axes[0, 0].set_ylabel("recovered share of the damage")
    axes[0, -1].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
