"""progress_bar: the three $MER_PROGRESS styles and the caller's switch."""
from __future__ import annotations

import pytest
from tqdm import tqdm

from mer_lib.errors import MerError
from mer_lib.progress import PROGRESS_ENV, STYLES, progress_bar, progress_style


@pytest.fixture()
def style(monkeypatch):
    """Set ``$MER_PROGRESS`` for one test (``None`` unsets it)."""

    def set_style(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(PROGRESS_ENV, raising=False)
        else:
            monkeypatch.setenv(PROGRESS_ENV, value)

    return set_style


def test_style_from_the_environment(style):
    style(None)
    assert progress_style() == "live"
    style("")
    assert progress_style() == "live"
    style("  LINE ")
    assert progress_style() == "line"
    style("off")
    assert progress_style() == "off"
    assert STYLES == ("live", "line", "off")


def test_invalid_style_names_the_variable_and_the_choices(style):
    style("verbose")
    with pytest.raises(MerError, match=r"\$MER_PROGRESS must be one of \['live', 'line', 'off'\], got 'verbose'"):
        progress_bar(range(3))


def test_line_prints_exactly_one_summary_line_on_stdout(style, capsys):
    style("line")
    assert list(progress_bar(range(5), desc="models", unit="models")) == [0, 1, 2, 3, 4]
    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1 and out.startswith("models: 5/5 models in 00:0") and out.endswith("\n")


def test_line_manual_bar_without_total_or_label(style, capsys):
    style("line")
    with progress_bar(initial=2) as bar:
        bar.update(3)
    bar.close()  # closing twice prints nothing more
    out, err = capsys.readouterr()
    assert err == "" and out.splitlines() == [out.rstrip("\n")] and out.startswith("5 it in ")


def test_line_nested_bar_without_leave_prints_nothing(style, capsys):
    style("line")
    for _ in progress_bar(range(2), desc="inner", leave=False):
        pass
    assert capsys.readouterr() == ("", "")


def test_live_draws_a_tqdm_bar_on_stderr(style, capsys):
    style("live")
    bar = progress_bar(range(4), desc="files")
    assert type(bar) is tqdm
    assert sum(1 for _ in bar) == 4
    out, err = capsys.readouterr()
    assert out == "" and "files" in err and "4/4" in err


@pytest.mark.parametrize("value, enabled", [("off", True), ("live", False), ("line", False)])
def test_off_and_disabled_are_silent(style, capsys, value, enabled):
    style(value)
    assert list(progress_bar(range(3), desc="quiet", enabled=enabled)) == [0, 1, 2]
    with progress_bar(total=2, desc="manual", enabled=enabled) as bar:
        bar.update(2)
    assert capsys.readouterr() == ("", "")
