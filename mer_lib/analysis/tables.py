"""Tables for people: "mean ± std" cells, Markdown and LaTeX renderings, and saving a table in every format."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_lib import artifacts


def format_mean_std(mean: float, std: float, decimals: int) -> str:
    """``"0.712 ± 0.015"``; ``"n/a"`` for an undefined mean, ``"0.712 ± n/a"`` for an undefined std (one seed)."""
    if np.isnan(mean):
        return "n/a"
    if np.isnan(std):
        return f"{mean:.{decimals}f} ± n/a"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def mean_std(df: pd.DataFrame, columns: Sequence[str], by: str = "system", decimals: int = 3) -> pd.DataFrame:
    """``mean ± std`` over seeds (std with ddof=1) of ``columns``, one row per ``by`` value."""
    agg = df.groupby(by, sort=False)[list(columns)].agg(["mean", "std"])
    out = pd.DataFrame(index=agg.index)
    for c in columns:
        out[c] = [format_mean_std(m, s, decimals) for m, s in zip(agg[(c, "mean")], agg[(c, "std")])]
    return out


# --------------------------------------------------------------------------- table output
def _cell(value, decimals: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if np.isnan(v):
            return "n/a"
        return f"{v:.{decimals}f}"
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _with_index(df: pd.DataFrame, index: bool) -> pd.DataFrame:
    return df.reset_index() if index else df


def table_to_markdown(df: pd.DataFrame, decimals: int = 3, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table, without ``tabulate``.

    Float cells get ``decimals`` decimals and NaN is ``n/a``; ``index=True`` adds the index as first column(s).
    Numbers are right-aligned, ``|`` in cells is escaped, and the text ends with a newline.
    """
    df = _with_index(df, index)
    header = [str(c).replace("|", "\\|") for c in df.columns]
    body = [[_cell(v, decimals).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    align = ["---:" if _is_numeric(df[c]) else ":---" for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$")


def table_to_latex(df: pd.DataFrame, decimals: int = 3, index: bool = False, caption: str | None = None,
                   label: str | None = None) -> str:
    """A booktabs LaTeX ``tabular``, in a ``table`` when a ``caption`` or ``label`` is given.

    ``df``, ``decimals``, ``index`` as for :func:`table_to_markdown`. Special characters are escaped and ``±``
    becomes ``$\\pm$``; the output needs ``\\usepackage{booktabs}``.
    """
    df = _with_index(df, index)
    spec = "".join("r" if _is_numeric(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(_cell(v, decimals)) for v in row) + r" \\"
              for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption is not None or label is not None:
        inner = [r"\begin{table}[t]", r"\centering"]
        if caption is not None:
            inner.append(rf"\caption{{{_latex_escape(caption)}}}")
        if label is not None:
            inner.append(rf"\label{{{label}}}")
        lines = inner + lines + [r"\end{table}"]
    return "\n".join(lines) + "\n"


def save_table(df: pd.DataFrame, stem: str | os.PathLike, decimals: int = 3, index: bool = False,
               caption: str | None = None, label: str | None = None) -> dict[str, Path]:
    """Write a table as ``<stem>.csv`` (full precision), ``<stem>.md`` and ``<stem>.tex``, atomically.

    Parameters
    ----------
    stem : path-like
        Destination without suffix (folders created), e.g. ``runs/quick/tables/table1``.
    decimals, index, caption, label
        Passed to :func:`table_to_markdown` / :func:`table_to_latex`.

    Returns
    -------
    dict
        ``{"csv": path, "md": path, "tex": path}``.
    """
    stem = Path(stem)
    paths = {ext: stem.with_name(stem.name + f".{ext}") for ext in ("csv", "md", "tex")}
    artifacts.write_text(paths["csv"], df.to_csv(index=index))
    artifacts.write_text(paths["md"], table_to_markdown(df, decimals=decimals, index=index))
    artifacts.write_text(paths["tex"], table_to_latex(df, decimals=decimals, index=index,
                                                      caption=caption, label=label))
    return paths
