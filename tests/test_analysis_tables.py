"""mean ± std cells, Markdown and LaTeX renderings, save_table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_lib.analysis import tables


# --------------------------------------------------------------------------- mean ± std
@pytest.mark.parametrize("mean, std, decimals, text", [
    (0.71234, 0.01567, 3, "0.712 ± 0.016"),
    (1.5, 0.25, 1, "1.5 ± 0.2"),  # Python's rounding of the binary value, as f-strings do
    (-0.5, 0.0, 2, "-0.50 ± 0.00"),
    (0.71234, np.nan, 3, "0.712 ± n/a"),
    (np.nan, 0.1, 3, "n/a"),
    (np.nan, np.nan, 2, "n/a"),
    (np.float32(0.25), np.float64(0.125), 0, "0 ± 0"),
])
def test_format_mean_std(mean, std, decimals, text):
    assert tables.format_mean_std(mean, std, decimals) == text


def test_mean_std_over_seeds():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"system": ["A2M2E"] * 4 + ["A2E"] * 3 + ["aA2E"], "seed": [1, 2, 3, 4, 1, 2, 3, 1],
                       "r": rng.random(8), "mae": rng.random(8)})
    out = tables.mean_std(df, ["mae", "r"])
    assert out.index.tolist() == ["A2M2E", "A2E", "aA2E"] and out.index.name == "system"  # order of appearance
    assert out.columns.tolist() == ["mae", "r"]
    for system, g in df.groupby("system"):
        for col in ("mae", "r"):
            values = g[col].to_numpy()
            std = np.std(values, ddof=1) if len(values) > 1 else np.nan
            assert out.loc[system, col] == tables.format_mean_std(values.mean(), std, 3)
    assert out.loc["aA2E", "r"].endswith(" ± n/a")  # one seed: no std
    a2e = df[df["system"] == "A2E"]["r"].to_numpy()
    assert out.loc["A2E", "r"] == f"{a2e.mean():.3f} ± {np.std(a2e, ddof=1):.3f}"


def test_mean_std_by_another_column_and_decimals():
    df = pd.DataFrame({"eps": [0.1, 0.1, 0.3, 0.3], "dmae": [1.0, 2.0, 3.0, 5.0]})
    out = tables.mean_std(df, ["dmae"], by="eps", decimals=1)
    assert out["dmae"].tolist() == ["1.5 ± 0.7", "4.0 ± 1.4"] and out.index.tolist() == [0.1, 0.3]


# --------------------------------------------------------------------------- Markdown, LaTeX, files
def test_markdown_latex_and_save(tmp_path):
    df = pd.DataFrame({"system": ["A2E", "a|b_c"], "n": [10, 3], "r": [0.12345, np.nan],
                       "txt": ["0.1 ± 0.2", "50%"]})
    md = tables.table_to_markdown(df, decimals=2)
    assert md.splitlines() == ["| system | n | r | txt |", "| :--- | ---: | ---: | :--- |",
                               "| A2E | 10 | 0.12 | 0.1 ± 0.2 |", "| a\\|b_c | 3 | n/a | 50% |"]
    tex = tables.table_to_latex(df, decimals=2, caption="Clean results", label="tab:clean")
    assert r"\begin{tabular}{lrrl}" in tex and r"a|b\_c & 3 & n/a & 50\% \\" in tex
    assert r"0.1 $\pm$ 0.2" in tex and r"\label{tab:clean}" in tex and tex.count(r"\end{table}") == 1
    paths = tables.save_table(df, tmp_path / "sub" / "table1")
    assert sorted(p.name for p in paths.values()) == ["table1.csv", "table1.md", "table1.tex"]
    back = pd.read_csv(paths["csv"])
    assert back["r"].iloc[0] == 0.12345 and paths["md"].read_text(encoding="utf-8") == tables.table_to_markdown(df)
    assert not list((tmp_path / "sub").glob(".*tmp"))  # no temporary files left


def test_markdown_index_bools_and_empty_table():
    df = pd.DataFrame({"ok": [True, False], "x": [1.0, 2.5]}, index=pd.Index(["A2E", "A2M2E"], name="system"))
    assert tables.table_to_markdown(df, decimals=1, index=True).splitlines() == [
        "| system | ok | x |", "| :--- | :--- | ---: |", "| A2E | True | 1.0 |", "| A2M2E | False | 2.5 |"]
    empty = tables.table_to_markdown(df.iloc[:0])
    assert empty == "| ok | x |\n| :--- | ---: |\n"


def test_latex_plain_tabular_and_escapes():
    df = pd.DataFrame({"a_b": ["x&y", "~^#$"], "v": [1, 2]})
    tex = tables.table_to_latex(df)
    assert tex.splitlines() == [r"\begin{tabular}{lr}", r"\toprule", r"a\_b & v \\", r"\midrule",
                                r"x\&y & 1 \\", r"\textasciitilde{}\textasciicircum{}\#\$ & 2 \\",
                                r"\bottomrule", r"\end{tabular}"]
    captioned = tables.table_to_latex(df, caption="50% {done}")
    assert r"\caption{50\% \{done\}}" in captioned and r"\label" not in captioned
    assert captioned.startswith("\\begin{table}[t]\n\\centering\n") and captioned.endswith("\\end{table}\n")


def test_save_table_with_index_and_caption(tmp_path):
    df = pd.DataFrame({"r": [0.5]}, index=pd.Index(["A2E"], name="system"))
    paths = tables.save_table(df, tmp_path / "t", decimals=1, index=True, caption="c", label="tab:t")
    assert paths == {"csv": tmp_path / "t.csv", "md": tmp_path / "t.md", "tex": tmp_path / "t.tex"}
    assert paths["csv"].read_text() == "system,r\nA2E,0.5\n"
    assert paths["md"].read_text(encoding="utf-8") == tables.table_to_markdown(df, decimals=1, index=True)
    assert paths["tex"].read_text(encoding="utf-8") == tables.table_to_latex(df, 1, True, "c", "tab:t")
