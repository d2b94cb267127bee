"""A lane: at most ``width`` threads at a time run a kind of work, served in arrival order.

Why searches take turns (bench/README.md, query_bench): a search is mostly Python work
(SQLAlchemy, sealing checks, the decision) around short SQLite steps, and each step
releases and retakes the GIL. Eight searches running at once in one process hand the
GIL back and forth thousands of times a call: measured at 1,000,000 records, eight
threads did 226 observable lookups a second at 5.6 ms of CPU each, the same eight
taking turns 392 a second at 2.5 ms. Waiting for a turn costs no CPU, and a call's
other work (TLS, the audit commit) still overlaps the search of another.

Turns are handed over in arrival order, so no search waits behind a stream of later
ones, and a long search gives way between the chunks it reads (:meth:`Lane.give_way`)
instead of holding up every search behind it until it ends.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType


class Lane:
    """A fair counting lock: ``with lane:`` runs the block when a turn is free."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError("a lane is at least 1 wide")
        self.width = width
        self._lock = threading.Lock()
        self._active = 0  # turns held (a turn handed over stays counted)
        self._waiting: deque[threading.Event] = deque()

    def acquire(self) -> None:
        with self._lock:
            if self._active < self.width and not self._waiting:
                self._active += 1
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # set by release() or give_way(), which handed their turn to this one

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # the turn passes on; _active is unchanged
            else:
                self._active -= 1

    def give_way(self) -> None:
        """For a thread holding a turn: if others wait, let the first go and queue behind them."""
        with self._lock:
            if not self._waiting:
                return
            turn = threading.Event()
            self._waiting.popleft().set()
            self._waiting.append(turn)
        turn.wait()

    @property
    def busy(self) -> bool:
        """Whether a turn is held now."""
        with self._lock:
            return self._active > 0

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def __enter__(self) -> Lane:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()
