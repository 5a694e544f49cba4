"""Progress bars (:func:`progress_bar`) that stay one line in a saved notebook.

``$MER_PROGRESS`` picks the style: ``live`` (default) is an ordinary tqdm bar; ``line`` (set by
:mod:`mer_lib.runner` and the Makefile) draws nothing and prints one line such as ``models: 15/15 in 02:11`` to
stdout at the end (a saved tqdm bar keeps every redraw, and stderr renders as an error block in HTML); ``off``
is silent.
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
    """The style chosen by ``$MER_PROGRESS`` (``live`` when unset); :class:`MerError` for any other value."""
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
    """A tqdm bar over ``iterable`` (or a manual one: ``total``, ``bar.update(n)``), styled by ``$MER_PROGRESS``.

    Parameters
    ----------
    iterable, total, desc, unit, initial
        As for tqdm (``initial``: items already done, for a resumed loop).
    enabled : bool
        ``False`` gives a silent bar (the caller's ``progress=False``).
    leave : bool
        Keep the bar (or print the summary line) when it ends; nested bars pass ``False``.
    """
    style = progress_style()
    disable = not enabled or style == "off"
    cls = _LineBar if style == "line" else tqdm
    return cls(iterable, total=total, desc=desc, disable=disable, leave=leave, unit=unit, initial=initial)
