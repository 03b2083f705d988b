"""Messages and progress on stderr, so stdout carries data only.

One ``Reporter`` per command: ``human`` shows messages and, on a terminal, a
live progress bar; off a terminal (CI logs, pipes) it prints one summary line
per epoch instead of a bar. ``json`` keeps the messages but never draws a bar.
``quiet`` shows warnings only. Ranks other than 0 stay silent.
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

FORMATS = ("human", "json", "quiet")


class Reporter:
    def __init__(self, fmt: str = "human", *, is_main: bool = True, console: Console | None = None):
        self.fmt = fmt
        self.is_main = is_main
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def interactive(self) -> bool:
        """Draw live bars only for a person at a terminal, never in CI."""
        return (self.fmt == "human" and self.is_main and self.console.is_terminal
                and not os.environ.get("CI") and not os.environ.get("MLTK_NO_PROGRESS"))

    def info(self, message: str) -> None:
        if self.is_main and self.fmt != "quiet":
            self.console.print(escape(message))

    def warn(self, message: str) -> None:
        if self.is_main:
            self.console.print(f"[yellow]warning:[/yellow] {escape(message)}")

    def progress(self, total: int, *, start: int = 0, description: str = "train") -> StepProgress:
        return StepProgress(self, total=total, start=start, description=description)


class StepProgress:
    """A bar over steps on a terminal; summary lines elsewhere. Use as a context manager."""

    def __init__(self, reporter: Reporter, *, total: int, start: int, description: str):
        self.reporter = reporter
        self.total = total
        self.start = start
        self.description = description
        self._bar: Progress | None = None
        self._task = None
        self._t0 = time.perf_counter()
        self._last_draw = 0.0

    def __enter__(self) -> StepProgress:
        if self.reporter.interactive:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(),
                                 console=self.reporter.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.start,
                                            status="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def wants_update(self, interval_s: float = 0.25) -> bool:
        """True when a bar is drawn and its last update is older than ``interval_s``."""
        if self._bar is None:
            return False
        now = time.perf_counter()
        if now - self._last_draw < interval_s:
            return False
        self._last_draw = now
        return True

    def update(self, step: int, **fields: float | str) -> None:
        """Move the bar to ``step`` and show ``fields`` (loss, lr, ...) beside it."""
        if self._bar is not None:
            self._bar.update(self._task, completed=step, status=format_fields(fields))

    def line(self, text: str) -> None:
        """A summary line: above the bar on a terminal, a plain stderr line elsewhere."""
        if not self.reporter.is_main or self.reporter.fmt == "quiet":
            return
        elapsed = time.perf_counter() - self._t0
        message = f"{text}  [{elapsed:.1f}s]"
        if self._bar is not None:
            self._bar.console.print(escape(message))
        else:
            print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning from code that has no Reporter (data readers): one stderr line, on the main rank only."""
    if os.environ.get("RANK", "0") == "0":
        print(f"warning: {message}", file=sys.stderr, flush=True)


def format_fields(fields: dict) -> str:
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)
