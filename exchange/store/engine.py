"""Creating the SQLAlchemy engine, set up for a node's workload on each back end.

Writers are serialised on both back ends: SQLite allows one anyway, and on
PostgreSQL every write transaction first takes one transaction-scoped advisory
lock (:func:`serialise_writers`). That is docs/design.md's "appends are serialised":
a log sequence number is allocated and committed under the lock, so entries
commit in sequence order and a puller that has passed seq n never misses an
n - 1 that commits later. A writer that rolls back releases the lock and leaves
no gap that matters (the next writer takes the same number).

Serving a query or a pull writes only its disclosure to the audit chain, which has
a lock of its own (:func:`serialise_audit`), taken by ``audit.append`` itself and so
held by a writer only from its audit entry (its last statement) to its commit. A
writer that sits idle in its transaction therefore delays other writers, never a
reader or a puller, on PostgreSQL. (SQLite has one write lock for everything, and
one process per database whose transactions never wait on anything but SQLite.)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    create_engine,
    event,
    func,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.types import ARRAY

# Execution option that makes a SQLite transaction take the write lock at BEGIN,
# so read-check-write sequences (version compare-and-set, audit chain head) are
# serialised instead of failing late with "database is locked".
WRITE = {"exchange_write": True}

# Classes of the PostgreSQL advisory locks (the first of their two keys; arbitrary, fixed).
# The second key is the hash of the schema the node's tables are in, so nodes sharing one
# database in different schemas never wait on each other.
WRITERS_LOCK = 0x45584301  # held by each write transaction until it ends
AUDIT_LOCK = 0x45584303  # held from an audit entry's append to its transaction's end
SCHEDULE_LOCK = 0x45584302  # held by the replica that runs the pull schedule (exchange/sync/leader.py)


def make_engine(url: str, *, wal_autocheckpoint: int | None = None) -> Engine:
    """``wal_autocheckpoint``: SQLite, the WAL size in pages past which a commit checkpoints
    (None: SQLite's default, 1,000; exchange/store/checkpoint.py says when it is raised)."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, wal_autocheckpoint)
    return _postgresql_engine(url)


def make_walk_engine(url: str) -> Engine | None:
    """PostgreSQL: the engine of walks (``Store.walk``); None on SQLite, whose planner needs no such help.

    A walk is one statement that follows an index already in the order asked for (a search's
    chunk newest first, a pull's log in seq order) and stops at its LIMIT. PostgreSQL's planner,
    misled by estimates of the release-list LIKE, would rather fetch every candidate and sort
    them, so a walk's session plans without sorting (``search.newest_first`` says what that
    cost). Planning such a statement (a join of three tables under a dozen conditions) took
    1.9 ms at 1,000,000 records, three times its execution (0.6 ms), on every search. So each
    walk is prepared once per connection and runs on a generic plan: with sorting off its shape
    is the index walk whatever the values, and nothing of it follows the size of a table that
    a later, larger one would get wrong. Its connections are in autocommit (one statement,
    one snapshot, as READ COMMITTED gives it anyway): no BEGIN and ROLLBACK round trips, and
    psycopg keeps what it prepared (a ROLLBACK makes it drop every prepared statement).
    Nothing but walks runs on these connections.
    """
    if url.startswith("sqlite"):
        return None
    return _postgresql_engine(url, walks=True)


# A session that dies with its host or its network must not hold a lock (the writers', the
# audit chain's, the schedule's) for the OS's two hours of TCP keepalive: both ends probe
# the connection, and a transaction left idle is ended by the server.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
# psycopg prepares a statement once it has run 5 times, and PostgreSQL may then settle on a
# generic plan costed when the table was small: a received batch's lookup of 500 record ids
# went on scanning the whole log of a growing node (0.4 s a batch at 90,000 entries, until
# statistics were gathered again, which never happens where autovacuum is off). Every
# statement is planned for its own values instead; planning costs well under a millisecond.
_CONNECT = {**_KEEPALIVES, "prepare_threshold": None}
_SESSION = (
    "SET idle_in_transaction_session_timeout = '60s'",
    # A node's reads are short and many: starting a parallel worker costs more (5 ms measured
    # on a first page at 1,000,000 records) than the whole walk it would share.
    "SET max_parallel_workers_per_gather = 0",
    "SET tcp_keepalives_idle = 30",
    "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 3",
)


# A pooled PostgreSQL connection idle for longer than this is pinged before it is used again,
# so one the server dropped meanwhile (a restart, a failover) is replaced, not failed on. A
# ping is a round trip: pinging at every checkout (pool_pre_ping) cost a search about a
# tenth of its time at 1,000,000 records, for the three connections a query takes in turn
# (search, sighting counts, audit), each back in the pool a moment earlier.
PING_AFTER_IDLE_SECONDS = 1.0


# A walk's session (make_walk_engine): plans without a sort step, and prepared statements
# on their generic plan.
_WALK_SESSION = ("SET enable_sort = off", "SET plan_cache_mode = force_generic_plan")


def _postgresql_engine(url: str, *, walks: bool = False) -> Engine:
    # hide_parameters: errors must not carry bound values into logs (they can be record content).
    # READ COMMITTED (PostgreSQL's default) matters: after the writers' lock is granted, each
    # statement sees everything the previous holder committed.
    engine = create_engine(
        url, pool_size=8, max_overflow=16, hide_parameters=True,
        isolation_level="AUTOCOMMIT" if walks else "READ COMMITTED",
        connect_args=dict(_CONNECT),
    )
    session = _SESSION + _WALK_SESSION if walks else _SESSION

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            for statement in session:
                cursor.execute(statement)
        dbapi_connection.commit()
        if walks:
            dbapi_connection.prepare_threshold = 0  # each walk is prepared the first time it runs
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # any failure of the ping: the pool connects afresh and retries
            raise DisconnectionError(f"a pooled connection is gone: {error}") from error

    return engine


def serialise_writers(conn: Connection) -> None:
    """Take the writers' lock for the rest of this transaction (PostgreSQL; SQLite's
    BEGIN IMMEDIATE already did the same)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"), {"key": WRITERS_LOCK})


def serialise_audit(conn: Connection) -> None:
    """Take the audit chain's lock for the rest of this transaction (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key, hashtext(current_schema()))"), {"key": AUDIT_LOCK})


def _sqlite_engine(url: str, wal_autocheckpoint: int | None = None) -> Engine:
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
        if wal_autocheckpoint is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        write = connection.get_execution_options().get("exchange_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def lookup_each(values: Sequence[str], query: Select[Any], key: ColumnElement[str]) -> Select[Any]:
    """PostgreSQL: ``query`` where ``key`` is each of ``values`` (its first row per value), run
    once per value, an index lookup each, whatever the planner believes.

    ``key IN (...500 values)`` is planned from the table's statistics, and a bulk load
    outruns them (autovacuum analyses a minute or more later): believing the table small,
    PostgreSQL reads every row of the originator or submitter and filters them (measured at
    100,000: 17 ms a call for references, 41 ms for records, instead of 1 and 3 ms once
    analysed), so each call of a bulk submission costs more as the store grows. A LATERAL
    subquery with LIMIT is never flattened into a join: it runs once per value.
    """
    wanted = func.unnest(literal(list(values), ARRAY(String))).table_valued("value").render_derived(name="wanted")
    one = query.where(key == wanted.c.value).limit(1).lateral("one")
    return select(one).select_from(wanted).join(one, true())
