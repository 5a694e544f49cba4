"""Progress bars that stay one line in a saved notebook.

Every long loop of the library shows a tqdm bar made by :func:`progress_bar`.
Where the bar goes depends on who is watching:

- in a terminal or an interactive notebook (the default, ``$MER_PROGRESS``
  unset or ``live``) it is an ordinary tqdm bar, updated in place;
- in a notebook executed to be saved (``$MER_PROGRESS=line``, set by
  :mod:`mer_lib.runner` and the Makefile) nothing is drawn while the loop
  runs and one line is printed to standard output when it ends, e.g.
  ``models: 15/15 in 02:11``, so the stored output is a single line (a tqdm
  bar stores every redraw, and standard error renders as an error block in
  HTML);
- ``$MER_PROGRESS=off`` silences all bars.
"""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from mer_lib.errors import MerError

#: Environment variable choosing the progress style: ``live`` (default), ``line`` or ``off``.
PROGRESS_ENV = "MER_PROGRESS"
STYLES = ("live", "line", "off")


def progress_style() -> str:
    """The style chosen by ``$MER_PROGRESS`` (``live`` when unset).

    Raises
    ------
    MerError
        If the variable holds anything else than ``live``, ``line`` or ``off``.
    """
    style = os.environ.get(PROGRESS_ENV, "").strip().lower() or "live"
    if style not in STYLES:
        raise MerError(f"${PROGRESS_ENV} must be one of {list(STYLES)}, got {style!r}")
    return style


class _LineBar(tqdm):
    """A tqdm bar that draws nothing until it closes, then prints one summary line to stdout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(file=io.StringIO(), mininterval=float("inf"), maxinterval=float("inf"))  # draws go nowhere
        self._summary_printed = False
        super().__init__(*args, **kwargs)

    def close(self) -> None:  # noqa: D102
        if not self.disable and not self._summary_printed and self.leave:
            self._summary_printed = True
            total = "" if self.total is None else f"/{self.total}"
            elapsed = self.format_interval(self.format_dict["elapsed"])
            label = f"{self.desc}: " if self.desc else ""
            print(f"{label}{self.n}{total} {self.unit} in {elapsed}", file=sys.stdout, flush=True)
        super().close()


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
                 enabled: bool = True, leave: bool = True, unit: str = "it", initial: int = 0) -> tqdm:
    """A progress bar over ``iterable`` (or a manual one with ``total``), styled by ``$MER_PROGRESS``.

    Parameters
    ----------
    iterable : iterable, optional
        Items to iterate over; omit for a manual bar (``bar.update(n)``).
    total : int, optional
        Number of items (default: ``len(iterable)`` where defined).
    desc : str, optional
        Label in front of the bar.
    enabled : bool
        ``False`` gives a silent bar (the caller's ``progress=False``).
    leave : bool
        Keep the bar (or print the summary line) when it ends; nested bars pass ``False``.
    unit : str
        Name of one item.
    initial : int
        Items already done (a resumed loop).

    Returns
    -------
    tqdm
        Use as an iterator or a context manager, like tqdm itself.
    """
    style = progress_style()
    disable = not enabled or style == "off"
    cls = _LineBar if style == "line" else tqdm
    return cls(iterable, total=total, desc=desc, disable=disable, leave=leave, unit=unit, initial=initial)
