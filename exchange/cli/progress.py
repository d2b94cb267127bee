"""A progress bar with rate and ETA for long operations (bulk submit, sync, export), on stderr.

Drawn only when stderr is a terminal, unless ``--progress`` forces it or
``--no-progress`` silences it: in a log or a pipe a redrawn line is only noise.
rich redraws from its own thread a few times a second, so drawing never slows
the work, and the bar never mixes with standard output (reports, JSON).
"""

from __future__ import annotations

import argparse
import sys
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["Bar", "progress_flag"]


def progress_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar with rate and ETA on stderr (default: only when stderr is a terminal)")


class _Rate(ProgressColumn):
    """Items per second, over rich's recent window (the whole run once finished)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{'-' if speed is None else f'{speed:,.0f}'} {self._unit}/s")


class Bar:
    """One operation's bar; ``total`` None when the end is not known in advance (then no ETA)."""

    def __init__(self, description: str, unit: str, total: int | None, *, force: bool | None,
                 stream: TextIO | None = None) -> None:
        stream = sys.stderr if stream is None else stream
        self.enabled = stream.isatty() if force is None else force
        console = Console(file=stream, force_terminal=True if force else None)
        columns: list[ProgressColumn | str] = [TextColumn(description)]
        if total is None:
            columns += [TextColumn(f"{{task.completed:,}} {unit}"), _Rate(unit), TextColumn("elapsed"),
                        TimeElapsedColumn()]
        else:
            columns += [BarColumn(), MofNCompleteColumn(), _Rate(unit), TextColumn("ETA"), TimeRemainingColumn()]
        self._progress = Progress(
            *columns, console=console, disable=not self.enabled, refresh_per_second=8,
            # Lines printed on a terminal stdout while the bar runs go above it; a
            # redirected stdout is left alone (the bar is on stderr, apart from it).
            redirect_stdout=self.enabled and sys.stdout.isatty(), redirect_stderr=False,
        )
        self._task = self._progress.add_task(description, total=total)

    def update(self, completed: int) -> None:
        self._progress.update(self._task, completed=completed)

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()
