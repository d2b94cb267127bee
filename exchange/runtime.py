"""Process-wide settings of the Python runtime for a node and its helper processes.

A node allocates many short-lived objects per record it receives, serves or stores
(protobuf messages, row tuples, dicts), and CPython's default collector runs a
generation-0 collection every 700 net allocations: measured on a received batch, about a
tenth of the writer's time went to collections that found no cycle. A node collects less
often instead, and what exists once it is set up (modules, the manifest, compiled SQL) is
frozen out of every later collection.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.process import BaseProcess

# Generation 0 collected every this many net allocations (CPython's default: 700). The
# older generations keep their defaults: garbage in cycles is still collected, later.
GEN0_THRESHOLD = 20_000
PARENT_CHECK_SECONDS = 0.5


def tune_collector() -> None:
    """Collect less often (never more often than now); freeze what exists so far."""
    first, second, third = gc.get_threshold()
    if first and first < GEN0_THRESHOLD:
        gc.set_threshold(GEN0_THRESHOLD, second, third)
    gc.freeze()


def exit_with_parent(parent: int) -> None:
    """In a helper process (check or search): end soon after the node's process ``parent`` is
    gone (a kill -9 included), as an orphan would keep its node's pipes and database open,
    waiting on a queue nobody writes to. Runs on a daemon thread of its own."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def pool_processes(pool: ProcessPoolExecutor) -> list[BaseProcess]:
    """The processes of a pool running now (ProcessPoolExecutor keeps them by pid, privately,
    and forgets them at ``shutdown``)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def end_processes(processes: list[BaseProcess], *, wait_seconds: float = 5.0) -> None:
    """Terminate a shut-down pool's processes, when nothing waits on them any more (the node is
    stopping), instead of letting them run on.

    A pool shut down without waiting still has its processes joined when the interpreter
    exits, and one still starting (importing the node: seconds on a busy machine) would
    hold the node's exit until it came up just to be told to end.
    """
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + wait_seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


class Periodic:
    """A daemon thread calling ``tick`` every ``interval`` seconds until ``stop``: the node's
    background duties (the store monitor, expiry warnings, the stream watchdog, the notifier,
    SQLite's WAL checkpoints) each run on one.

    ``at_start``: tick once as soon as the thread starts, then every ``interval``.
    ``join_seconds``: how long ``stop`` waits for a tick in progress (None: as long as it takes).
    Started again after ``stop``, it runs again.
    """

    def __init__(self, name: str, interval: float, tick: Callable[[], object], *, at_start: bool = False,
                 join_seconds: float | None = None) -> None:
        self.name = name
        self._interval = interval
        self._tick = tick
        self._at_start = at_start
        self._join_seconds = join_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called: a long tick checks it between its steps."""
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> bool:
        """No tick starts after this; returns once the one in progress (if any) has ended.
        Whether the thread was running."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._join_seconds)
        return thread is not None

    def _run(self) -> None:
        if self._at_start:
            self._tick()
        while not self._stop.wait(self._interval):
            self._tick()
