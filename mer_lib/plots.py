"""Figures shared by the notebooks (seaborn/matplotlib)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import pyplot as plt

from mer_lib.constants import EMOTIONS, MIDLEVEL, TARGET_SCALE


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
    """Two emotion x feature heatmaps side by side, on the same colour scale."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, mat, title in ((axes[0], corr, left_title), (axes[1], reference, right_title)):
        sns.heatmap(mat, ax=ax, vmin=-1, vmax=1, cmap="vlag", annot=True, fmt=".2f",
                    cbar=ax is axes[1], annot_kws={"size": 8})
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    return fig
