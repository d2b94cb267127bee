"""SQLite: copying the write-ahead log into the database in the background, not in a commit.

By default SQLite checkpoints inside a commit: the transaction whose commit takes the WAL
past ``wal_autocheckpoint`` pages copies every page of it into the database file and syncs
that file before its ``COMMIT`` returns. On a node that makes one request in every few
hundred pay for everyone's writes: a liaison officer's search (whose audit entry commits)
waits for tens of megabytes to be copied, and so does the received batch of a pull whose
commit crossed the line, while the next batch waits behind it.

A node's store (``Store.open(..., checkpoint_in_background=True)``) runs this thread
instead: every ``interval`` seconds it runs a PASSIVE checkpoint on a connection of its
own, which copies what it can without waiting for (or blocking) any reader or writer. The
node's own connections keep automatic checkpoints, at a high mark
(``FOREGROUND_CHECKPOINT_PAGES``), so the WAL stays bounded should this thread fall behind
or stop. Durability is unchanged: a commit is durable once its WAL frames are (``synchronous``
says when); a checkpoint only moves committed pages into the database file.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine

from exchange.runtime import Periodic

log = logging.getLogger("exchange.store")

# wal_autocheckpoint of a store that checkpoints in the background: the safety net only
# (about 160 MB of WAL), never reached while the thread keeps up.
FOREGROUND_CHECKPOINT_PAGES = 40_000
INTERVAL_SECONDS = 1.0


class WalCheckpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds."""

    def __init__(self, engine: Engine, *, interval: float = INTERVAL_SECONDS) -> None:
        self._engine = engine
        self._thread = Periodic("wal-checkpoint", interval, self.checkpoint)
        self._running = False
        self._failing = False  # logged once per run of failures, not every second
        self.checkpoints = 0  # PASSIVE checkpoints run (tests and metrics read it)
        self.pages_copied = 0  # WAL frames copied into the database by them

    def start(self) -> None:
        self._thread.start()
        self._running = True

    def stop(self) -> None:
        """Stop the thread, then copy what the WAL still holds (the store is closing: no writer)."""
        self._thread.stop()
        if self._running:
            self._running = False
            self.checkpoint()

    def checkpoint(self) -> int:
        """One PASSIVE checkpoint now; the WAL frames it copied (0 if it failed)."""
        started = time.monotonic()
        try:
            raw = self._engine.raw_connection()
            try:
                busy, frames, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                raw.close()
        except Exception as error:  # a locked or vanished file: the foreground mark still bounds the WAL
            if not self._failing:
                log.warning("background WAL checkpoint failed (%s); commits checkpoint past %d pages meanwhile",
                            type(error).__name__, FOREGROUND_CHECKPOINT_PAGES)
            self._failing = True
            return 0
        if self._failing:
            log.info("background WAL checkpoint works again")
            self._failing = False
        self.checkpoints += 1
        copied = max(0, int(copied))
        self.pages_copied += copied
        if copied:
            log.debug("WAL checkpoint: %d of %d frames copied in %.1f ms%s", copied, frames,
                      (time.monotonic() - started) * 1000, " (busy)" if busy else "")
        return copied
