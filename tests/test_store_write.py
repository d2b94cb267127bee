"""The one write-transaction API, ``Store.write``: what it holds, when, and how durably it commits.

Observed from outside the transaction through the databases' own non-blocking probes
(BEGIN IMMEDIATE with no busy wait on SQLite, pg_try_advisory_xact_lock on PostgreSQL),
so no test waits on a timer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text

from exchange.store import Store
from exchange.store.engine import WRITERS_LOCK
from exchange.store.integrity import Integrity
from exchange.store.schema import meta
from tests.backends import Backend

AGENCY = "JPN-NPA"
SYNCHRONOUS_FULL, SYNCHRONOUS_NORMAL = 2, 1


def _writers_lock_free(backend: Backend, data_dir: Path) -> bool:
    """Whether another writer could start now (without waiting for one)."""
    if backend.name == "sqlite":
        raw = sqlite3.connect(data_dir / "node.db", timeout=0, isolation_level=None)
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            assert "locked" in str(error)
            return False
        finally:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raw.close()
        return True
    engine = backend.engine(data_dir)
    try:
        with engine.connect() as conn, conn.begin():
            return bool(conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:key, hashtext(current_schema()))"), {"key": WRITERS_LOCK}
            ).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def opened(backend: Backend, tmp_path: Path) -> Iterator[tuple[Store, Path]]:
    data_dir = tmp_path / "db"
    store = Store.open(backend.migrated(data_dir), agency=AGENCY, seal=Integrity(b"\x01" * 32))
    yield store, data_dir
    store.close()


def _probe(store: Store) -> bytes | None:
    with store.engine.connect() as conn:
        value = conn.execute(select(meta.c.value).where(meta.c.key == "probe")).scalar_one_or_none()
    return None if value is None else bytes(value)


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_holds_the_writers_lock_until_it_commits(
    backend: Backend, opened: tuple[Store, Path], durable: bool
) -> None:
    store, data_dir = opened
    assert _writers_lock_free(backend, data_dir)
    with store.write(durable=durable) as tx:
        tx.execute(insert(meta).values(key="probe", value=b"1"))
        assert not _writers_lock_free(backend, data_dir)
        assert _probe(store) is None  # not committed yet
    assert _writers_lock_free(backend, data_dir)
    assert _probe(store) == b"1"


def test_a_write_that_raises_leaves_nothing(opened: tuple[Store, Path]) -> None:
    store, _ = opened
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.execute(insert(meta).values(key="probe", value=b"1"))
        raise RuntimeError("rolled back")
    assert _probe(store) is None
    with store.write() as tx:  # the lock was released: the next writer goes ahead
        tx.execute(insert(meta).values(key="probe", value=b"2"))
        with pytest.raises(RuntimeError), tx.begin_nested():  # a savepoint rolls back alone
            tx.execute(delete(meta).where(meta.c.key == "probe"))
            raise RuntimeError("savepoint rolled back")
    assert _probe(store) == b"2"


def test_an_audit_only_write_takes_the_writers_lock_on_sqlite_alone(
    backend: Backend, opened: tuple[Store, Path]
) -> None:
    """PostgreSQL: serving a query or a pull (which audits) never waits for a writer."""
    store, data_dir = opened
    with store.write(audit_only=True):
        assert _writers_lock_free(backend, data_dir) is (backend.name == "postgresql")


def test_a_write_that_need_not_be_durable_relaxes_sqlite_sync_for_itself_only(tmp_path: Path) -> None:
    """SQLite only (PostgreSQL commits the same way either way): synchronous=NORMAL while a
    non-durable transaction runs, FULL again after it and for every durable one."""
    data_dir = tmp_path / "db"
    store = Store.open(Backend("sqlite").migrated(data_dir), agency=AGENCY, seal=Integrity(b"\x01" * 32))
    try:
        for durable, inside in ((True, SYNCHRONOUS_FULL), (False, SYNCHRONOUS_NORMAL), (True, SYNCHRONOUS_FULL)):
            with store.write(durable=durable) as tx:
                assert tx.exec_driver_sql("PRAGMA synchronous").scalar_one() == inside
                checkpoint = tx.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
                assert checkpoint == (1000 if durable else 10_000)
        # The pool hands the same connections out again: none kept the relaxed setting.
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == SYNCHRONOUS_FULL
    finally:
        store.close()


PAGE = 4096


def _write_pages(store: Store, pages: int) -> None:
    """About ``pages`` WAL frames, in commits of 64 pages each (durable ones, as an audit entry's)."""
    for i in range(pages // 64):
        with store.write() as tx:
            tx.execute(insert(meta).values(key=f"filler-{i}", value=bytes([i % 251]) * (64 * PAGE - 512)))


def _wal_frames(data_dir: Path) -> int:
    wal = data_dir / "node.db-wal"
    return wal.stat().st_size // (PAGE + 24) if wal.exists() else 0


def test_a_node_store_copies_its_wal_in_the_background_never_in_a_commit(tmp_path: Path) -> None:
    """SQLite: a commit past 1,000 WAL pages would copy them all into the database before it
    returns (a search's audit entry, a pull's batch); in a node's store none does, its
    checkpointer thread does (exchange/store/checkpoint.py)."""
    data_dir = tmp_path / "db"
    store = Store.open(Backend("sqlite").migrated(data_dir), agency=AGENCY, seal=Integrity(b"\x01" * 32),
                       checkpoint_in_background=True)
    try:
        assert store.checkpointer is not None
        store.checkpointer.stop()  # held still, so what the commits leave is seen
        _write_pages(store, 3000)
        assert _wal_frames(data_dir) >= 2900  # no commit checkpointed (SQLite's default is 1,000)
        copied = store.checkpointer.checkpoint()
        assert copied >= 2900
        assert len(_fillers(store)) == 3000 // 64  # nothing lost by copying
    finally:
        store.close()


def test_a_store_without_a_checkpointer_checkpoints_in_its_commits(tmp_path: Path) -> None:
    """The same writes in a store opened by a tool (no thread): SQLite's own checkpoints keep
    the WAL near 1,000 pages, as before."""
    data_dir = tmp_path / "db"
    store = Store.open(Backend("sqlite").migrated(data_dir), agency=AGENCY, seal=Integrity(b"\x01" * 32))
    try:
        assert store.checkpointer is None
        _write_pages(store, 3000)
        assert _wal_frames(data_dir) < 1200
    finally:
        store.close()


def test_the_checkpointer_thread_empties_the_wal_and_stops_with_its_store(tmp_path: Path) -> None:
    import threading
    import time

    from exchange.store.checkpoint import WalCheckpointer

    data_dir = tmp_path / "db"
    store = Store.open(Backend("sqlite").migrated(data_dir), agency=AGENCY, seal=Integrity(b"\x01" * 32),
                       checkpoint_in_background=True)
    assert store.checkpointer is not None
    store.checkpointer.stop()
    store.checkpointer = checkpointer = WalCheckpointer(store._base_engine, interval=0.05)
    checkpointer.start()
    try:
        _write_pages(store, 1500)
        deadline = time.monotonic() + 30
        while checkpointer.pages_copied < 1400 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checkpointer.pages_copied >= 1400
    finally:
        store.close()
    assert not any(t.name == "wal-checkpoint" and t.is_alive() for t in threading.enumerate())


def test_postgresql_has_no_checkpointer_to_run(backend: Backend, tmp_path: Path) -> None:
    """PostgreSQL checkpoints in its own background processes: the option changes nothing there."""
    store = Store.open(backend.migrated(tmp_path / "db"), agency=AGENCY, seal=Integrity(b"\x01" * 32),
                       checkpoint_in_background=True)
    try:
        assert (store.checkpointer is not None) is (backend.name == "sqlite")
    finally:
        store.close()


def _fillers(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [k for k in conn.execute(select(meta.c.key)).scalars() if k.startswith("filler-")]


def test_the_checkpointer_keeps_its_own_connection_so_a_writer_keeps_its_page_cache(tmp_path: Path) -> None:
    """Each pooled connection fills a page cache of its own: a checkpointer that took one from
    the pool at every tick would hand the writer another at its next transaction (the pool is
    first in, first out), and a pull's memory grew by 50 MiB that way."""
    store = Store.open(Backend("sqlite").migrated(tmp_path / "db"), agency=AGENCY, seal=Integrity(b"\x01" * 32),
                       checkpoint_in_background=True)
    try:
        assert store.checkpointer is not None
        store.checkpointer.checkpoint()  # it holds a connection from its first checkpoint on
        connections = set()
        for i in range(6):
            with store.write() as tx:
                connections.add(id(tx.connection.dbapi_connection))
                tx.execute(insert(meta).values(key=f"filler-{i}", value=b"x"))
                store.checkpointer.checkpoint()  # a tick while the writer holds its connection
        assert len(connections) == 1
    finally:
        store.close()
