"""The node's store: opening it, and the one way to write to it.

What the store holds is read and written by the modules beside this one, each with
one job, all through a :class:`Store`:

- ``log``: the append-only log (pull chunks, digests, fingerprints);
- ``current``: the current version of each record and its index rows;
- ``local``: the node's own writes (a version it just signed, with its audit entry);
- ``search``: search planning over the current versions;
- ``peers``: where this node is in each partner's log;
- ``events``: security events and quarantined entries;
- ``audit``: the hash-chained audit log;
- ``received``: applying what a partner served;
- ``watch``: the liaison officer's disclosure index and watch lists.

Every write happens in a transaction from :meth:`Store.write`, so a version, its log
entry, its index rows and its audit entry land together or not at all. Reads return
*candidates*; whether a caller may see one is decided by the read path through
``exchange.core.policy`` and never here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, select

from exchange.core.marking import Marking
from exchange.store import integrity, migrate
from exchange.store.checkpoint import FOREGROUND_CHECKPOINT_PAGES, WalCheckpointer
from exchange.store.engine import WRITE, make_engine, make_walk_engine, serialise_writers
from exchange.store.schema import meta
from exchange.v1 import records_pb2

__all__ = ["RECEIVED_CHECKPOINT_PAGES", "Store", "marking_of", "now_us"]

# wal_autocheckpoint while a non-durable transaction commits (see Store._durability).
RECEIVED_CHECKPOINT_PAGES = 10_000


def now_us() -> int:
    return time.time_ns() // 1000


def marking_of(marking: records_pb2.Marking) -> Marking:
    return Marking(
        classification=marking.classification,
        releasable_to=frozenset(marking.releasable_to),
        tlp=marking.tlp,
        caveats=frozenset(marking.caveats),
    )


class Store:
    """An open database at this software's schema, for one agency's node."""

    def __init__(
        self, engine: Engine, *, agency: str, seal: integrity.Integrity, distrusted_keys: Iterable[str] = (),
        checkpointer: WalCheckpointer | None = None,
    ) -> None:
        self._base_engine = engine
        self.checkpointer = checkpointer  # SQLite, a node's store: copies the WAL in the background
        # Every connection carries the node's seal (integrity.of): rows are sealed where
        # written and checked where read, whichever module does either.
        self._engine = engine.execution_options(**{integrity.OPTION: seal})
        # PostgreSQL: reads of one statement at a time in autocommit (``read``), walks on
        # connections of their own (engine.make_walk_engine).
        postgresql = engine.dialect.name == "postgresql"
        self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT") if postgresql else self._engine
        self._walk_engine = make_walk_engine(engine.url.render_as_string(hide_password=False))
        self._walker = (self._walk_engine or engine).execution_options(**{integrity.OPTION: seal})
        self._writer = self._engine.execution_options(**WRITE)
        self.seal = seal
        seal.reporter = integrity.Reporter(self.write, agency)
        # One writer at a time in this process: SQLite allows one anyway, and waiting on a
        # lock is far cheaper than its busy back-off (a sleep of up to 100 ms).
        self._write_lock = threading.RLock()
        self._distrusted_keys = frozenset(distrusted_keys)
        self.agency = agency

    @classmethod
    def open(
        cls, url: str, *, agency: str, seal: integrity.Integrity, distrusted_keys: Iterable[str] = (),
        checkpoint_in_background: bool = False,
    ) -> Store:
        """Open a database whose schema is at this software's head revision (else ConfigError).

        ``seal``: the node's integrity key (exchange/store/integrity.py), kept outside the
        database; rows are sealed under it when written and checked when read.

        ``distrusted_keys``: the signing key ids the manifest marks compromised. Every
        signature they made is void, so entries signed with them are neither shown nor
        served by this store (docs/design.md "Signing"), whoever opened it.

        ``checkpoint_in_background``: SQLite, a long-running process (the node): a thread copies
        the WAL into the database, so no commit does but a writer's that never pauses
        (exchange/store/checkpoint.py).
        """
        migrate.refuse_missing_sqlite(url)  # connecting would create an empty file
        background = checkpoint_in_background and url.startswith("sqlite")
        with migrate.database_errors(url):
            engine = make_engine(url, wal_autocheckpoint=FOREGROUND_CHECKPOINT_PAGES if background else None)
            try:
                migrate.check(engine)
            except BaseException:
                engine.dispose()
                raise
        checkpointer = WalCheckpointer(engine) if background else None
        store = cls(engine, agency=agency, seal=seal, distrusted_keys=distrusted_keys, checkpointer=checkpointer)
        if checkpointer is not None:
            checkpointer.start()
        return store

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()  # copies what is left, before the connections go
        self._base_engine.dispose()
        if self._walk_engine is not None:
            self._walk_engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    def read(self) -> Connection:
        """A connection for reads whose statements need not share a snapshot (``with store.read()
        as conn:``): on PostgreSQL each statement is its own transaction (autocommit), which
        spares a BEGIN and a ROLLBACK round trip per use (half the time of a short read, such
        as a page's sighting counts). READ COMMITTED gave each statement its own snapshot anyway.
        SQLite: an ordinary connection (no round trips to spare)."""
        return self._reader.connect()

    def walk(self, walk: bool = True) -> Connection:
        """A connection for one statement that walks an index in the order it asks for and stops
        at its LIMIT (``with store.walk() as conn:``). On PostgreSQL it runs on a connection of
        the walks' own, planned without a sort step, prepared, in autocommit
        (engine.make_walk_engine); nothing else may run on it. ``walk=False``: ``read``, for a
        statement left to the planner."""
        return self._walker.connect() if walk else self.read()

    @property
    def distrusted_keys(self) -> frozenset[str]:
        """Key ids whose entries this store leaves out of every read."""
        return self._distrusted_keys

    def distrust(self, key_ids: Iterable[str]) -> None:
        """Replace the distrusted key ids: a newly adopted manifest marks keys compromised
        (every read after this leaves their entries out)."""
        self._distrusted_keys = frozenset(key_ids)

    @contextmanager
    def write(self, *, durable: bool = True, audit_only: bool = False, one_statement: bool = False
              ) -> Iterator[Connection]:
        """The write transaction: ``with store.write() as tx:`` commits at the end of the block,
        or rolls back if it raises.

        It takes this process's write lock and the writers' lock (once, for the whole
        transaction), so writers are serialised across every replica sharing the database
        (exchange/store/engine.py says why). Savepoints (``tx.begin_nested()``) work inside.

        ``durable=False``: on SQLite, commit without waiting for the disk (for received
        batches, whose loss a pull repairs; see :meth:`_durability`). PostgreSQL commits
        the same way either way.

        ``audit_only``: a transaction that only appends disclosures to the audit chain (and
        their index). On PostgreSQL it takes the audit chain's lock alone (``audit.append``
        does), not the writers' lock nor this process's: serving a query or a pull never
        waits for a writer that is slow or idle in its transaction. On SQLite, one write
        lock serves all, so it is an ordinary write transaction there.

        ``one_statement`` (with ``audit_only``, PostgreSQL): the block runs one statement, which
        is then its own transaction (autocommit): no BEGIN and COMMIT round trips around it.
        """
        # seal.anchoring: once the transaction commits, the audit head it wrote is anchored
        # outside the database (exchange/store/integrity.py).
        if audit_only and self._engine.dialect.name != "sqlite":
            with self.seal.anchoring(), (self._reader if one_statement else self._writer).begin() as conn:
                yield conn
            return
        with self._write_lock, self.seal.anchoring(), self._writer.connect() as conn, \
                self._durability(conn, durable), conn.begin():
            serialise_writers(conn)
            yield conn

    @staticmethod
    @contextmanager
    def _durability(conn: Connection, durable: bool) -> Iterator[None]:
        """When not ``durable``, on SQLite: commit without waiting for the disk (synchronous=NORMAL).

        WAL keeps every commit atomic and the database consistent either way; what a
        power cut could lose is the last batches, and their cursor with them, so the
        next pull fetches them again from the partner. The node's own records (an
        analyst's receipt) keep synchronous=FULL.

        A pull writes batch after batch, each dirtying pages all over the indexes, so
        its commits checkpoint the WAL less often (every 10,000 pages instead of 1,000):
        a page rewritten by several batches is copied into the database once, not once
        per batch. Atomicity and crash safety are the WAL's either way; only its size
        between checkpoints (at most ~40 MB) changes.
        """
        if durable or conn.dialect.name != "sqlite":
            yield
            return
        raw = conn.connection.dbapi_connection
        if raw is None:  # a checked-out connection always has one; SQLAlchemy's type allows None
            raise RuntimeError("the write connection has no database connection")
        checkpoint = int(raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        raw.execute("PRAGMA synchronous=NORMAL")
        if checkpoint > 0:  # 0: automatic checkpoints are off, and stay off
            # The received batch checkpoints itself past this mark, even where a thread copies the
            # WAL in the background (exchange/store/checkpoint.py): a writer that never stops
            # leaves that thread no moment when the WAL is all copied, and only then does SQLite
            # start the WAL file over; the commit's own checkpoint makes that moment (most of
            # the WAL already copied by the thread), so the WAL stays within ~40 MB.
            raw.execute(f"PRAGMA wal_autocheckpoint={RECEIVED_CHECKPOINT_PAGES}")
        try:
            yield
        finally:
            raw.execute("PRAGMA synchronous=FULL")
            raw.execute(f"PRAGMA wal_autocheckpoint={checkpoint}")

    def token_key(self) -> bytes:
        return self._meta("token_key")

    def log_epoch(self) -> bytes:
        return self._meta("log_epoch")

    def _meta(self, key: str) -> bytes:
        with self._engine.connect() as conn:
            value: bytes = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one()
        return bytes(value)

    def ping(self) -> None:
        """Raise unless the store's tables can be read (not just the server answer)."""
        with self._engine.connect() as conn:
            conn.execute(select(meta.c.key).limit(1)).all()
