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
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import ProgressColumn

__all__ = ["Bar", "progress_flag"]


def progress_flag(parser: argparse._ActionsContainer) -> None:
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar with rate and ETA on stderr (default: only when stderr is a terminal)")


def _columns(description: str, unit: str, total: int | None) -> list[ProgressColumn]:
    # rich is imported only once a bar is made: completion and --help run without it.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        """Items per second, over rich's recent window (the whole run once finished)."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{'-' if speed is None else f'{speed:,.0f}'} {unit}/s")

    columns: list[ProgressColumn] = [TextColumn(description)]
    if total is None:  # no end known in advance: the count and the time so far, no ETA
        return [*columns, TextColumn(f"{{task.completed:,}} {unit}"), Rate(), TextColumn("elapsed"),
                TimeElapsedColumn()]
    return [*columns, BarColumn(), MofNCompleteColumn(), Rate(), TextColumn("ETA"), TimeRemainingColumn()]


class Bar:
    """One operation's bar; ``total`` None when the end is not known in advance (then no ETA)."""

    def __init__(self, description: str, unit: str, total: int | None, *, force: bool | None,
                 stream: TextIO | None = None) -> None:
        stream = sys.stderr if stream is None else stream
        self.enabled = stream.isatty() if force is None else force
        from rich.console import Console
        from rich.progress import Progress

        console = Console(file=stream, force_terminal=True if force else None)
        self._progress = Progress(
            *_columns(description, unit, total), console=console, disable=not self.enabled, refresh_per_second=8,
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
