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
