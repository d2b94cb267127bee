"""SQLite: copying the write-ahead log into the database in the background, not in a commit.

By default SQLite checkpoints inside a commit: the transaction whose commit takes the WAL
past ``wal_autocheckpoint`` pages copies every page of it into the database file and syncs
that file before its ``COMMIT`` returns. On a node, that makes one request in every few
hundred pay for everyone's writes: a liaison officer's search (whose audit entry commits)
waits for tens of megabytes to be copied, and so does the received batch of a pull whose
commit crossed the line, while the next batch waits behind it.

A node's store (``Store.open(..., checkpoint_in_background=True)``) runs this thread
too: every ``interval`` seconds it runs a PASSIVE checkpoint on a connection of its own,
which copies what it can without waiting for (or blocking) any reader or writer. Where
writes come and go (searches' audit entries, submissions) the WAL is all copied between
them, so SQLite starts it over and no commit ever reaches the mark. A writer that never
stops (a pull, a bulk submission) leaves no such moment: the WAL grows to the node's mark
(``FOREGROUND_CHECKPOINT_PAGES``, 40 MB), and the commit that passes it checkpoints after
all, finding most of the WAL already copied, which lets SQLite start the WAL over. Durability
is unchanged: a commit is durable once its WAL frames are (``synchronous`` says when); a
checkpoint only moves committed pages into the database file.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import Engine

from exchange.runtime import Periodic

log = logging.getLogger("exchange.store")

# wal_autocheckpoint of a store that checkpoints in the background: reached only by a writer
# that never stops (about 40 MB of WAL, as a pull's batches already had: store.RECEIVED_CHECKPOINT_PAGES).
FOREGROUND_CHECKPOINT_PAGES = 10_000
INTERVAL_SECONDS = 1.0


class WalCheckpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds."""

    def __init__(self, engine: Engine, *, interval: float = INTERVAL_SECONDS) -> None:
        self._engine = engine
        self._thread = Periodic("wal-checkpoint", interval, self.checkpoint)
        # A connection of its own, kept: taken from the pool at every tick, it would make the
        # pool hand the writer another connection after each (the pool is first in, first out),
        # and every connection would fill a page cache of its own (16 MiB each: 50 MiB more at
        # the end of a 100,000-record pull, measured).
        self._connection: Any = None
        self._lock = threading.Lock()  # the tick and the final checkpoint at stop
        self._failing = False  # logged once per run of failures, not every second
        self.pages_copied = 0  # WAL frames the checkpoints copied into the database (tests read it)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then copy what the WAL still holds (the store is closing: no writer)."""
        if self._thread.stop():
            self.checkpoint()
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def checkpoint(self) -> int:
        """One PASSIVE checkpoint now; the WAL frames it copied (0 if it failed)."""
        started = time.monotonic()
        try:
            with self._lock:
                if self._connection is None:
                    self._connection = self._engine.raw_connection()
                try:
                    busy, frames, copied = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except Exception:
                    self._connection.invalidate()  # the next tick starts with a new one
                    self._connection = None
                    raise
        except Exception as error:  # a locked or vanished file: the foreground mark still bounds the WAL
            if not self._failing:
                log.warning("background WAL checkpoint failed (%s); commits checkpoint past %d pages meanwhile",
                            type(error).__name__, FOREGROUND_CHECKPOINT_PAGES)
            self._failing = True
            return 0
        if self._failing:
            log.info("background WAL checkpoint works again")
            self._failing = False
        copied = max(0, int(copied))
        self.pages_copied += copied
        if copied:
            log.debug("WAL checkpoint: %d of %d frames copied in %.1f ms%s", copied, frames,
                      (time.monotonic() - started) * 1000, " (busy)" if busy else "")
        return copied
