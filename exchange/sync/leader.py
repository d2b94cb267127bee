"""Which replica of a node runs the pull schedule: one at a time, elected by a lock.

Replicas of one agency's node share its database; all of them serve, but only the
holder of the schedule lock pulls. The lock belongs to a database session (a
PostgreSQL session-level advisory lock, or an exclusive lock on a file beside a
SQLite database), not to a wall-clock lease: it is released the moment its holder's
connection or process dies, whatever the clocks say, and a standby that polls
takes over on its next attempt.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text

from exchange.store.engine import SCHEDULE_LOCK

log = logging.getLogger("exchange.sync")


class Leadership:
    """Try to become (and check that we still are) the replica that runs the schedule."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None  # PostgreSQL: the session that holds the lock
        self._file: IO[bytes] | None = None  # SQLite: the locked file
        self.leading = False

    def poll(self) -> bool:
        """Acquire the lock if free, or confirm we hold it; returns whether we lead now."""
        was = self.leading
        try:
            self.leading = self._hold() if self.leading else self._acquire()
        except Exception as error:  # a lost connection is lost leadership, never a crash
            log.warning("schedule election: %s", error)
            self.release()
        if self.leading != was:
            log.info("this replica %s the pull schedule", "now runs" if self.leading else "no longer runs")
        return self.leading

    def release(self) -> None:
        self.leading = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()  # closes the session: PostgreSQL drops its locks
            self._conn = None
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    # --- per back end ----------------------------------------------------------------------

    def _acquire(self) -> bool:
        if self._engine.dialect.name == "postgresql":
            conn = self._engine.connect()
            try:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:key, hashtext(current_schema()))"), {"key": SCHEDULE_LOCK}
                ).scalar_one()
                conn.commit()  # end the implicit transaction; the session lock outlives it
            except BaseException:
                # Never back to the pool: a rollback does not release a session lock, so a
                # pooled connection could hold the schedule's lock with no one leading.
                conn.invalidate()
                conn.close()
                raise
            if got:
                self._conn = conn
            else:
                conn.close()
            return bool(got)
        path = _sqlite_lock_path(self._engine)
        if path is None:
            return True  # an in-memory database has one process by definition
        # Held open while we lead; empty, but 0600 like every file beside the database.
        handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def _hold(self) -> bool:
        if self._conn is not None:
            held = self._conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                     "AND classid = :key AND granted"), {"key": SCHEDULE_LOCK}
            ).scalar_one()
            self._conn.commit()
            if not held:
                self.release()
            return bool(held)
        return True  # a flock lasts as long as our descriptor


def _sqlite_lock_path(engine: Engine) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(os.fspath(database) + ".schedule-lock")
