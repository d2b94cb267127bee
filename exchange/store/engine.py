"""Creating the SQLAlchemy engine, with SQLite set up for a node's workload."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

# Execution option that makes a SQLite transaction take the write lock at BEGIN,
# so read-check-write sequences (version compare-and-set, audit chain head) are
# serialised instead of failing late with "database is locked".
WRITE = {"exchange_write": True}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def _sqlite_engine(url: str) -> Engine:
    # hide_parameters: errors must not carry bound values into logs (they can be record content).
    engine = create_engine(url, pool_size=8, max_overflow=16, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver; _on_begin issues BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a committed batch survives power loss
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 16 MiB of page cache per connection (SQLite's default is 2 MiB): a search's
        # index and record pages stay in the connection instead of being read again
        # from the OS cache, which halves the time of a first page at 1,000,000 records.
        # Pages are allocated as used, so an idle connection stays small.
        cursor.execute("PRAGMA cache_size=-16384")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("exchange_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
