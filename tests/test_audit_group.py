"""Disclosures recorded at once by many threads share one commit (group commit), and each
caller returns only once its own entry is committed, in a chain that still verifies."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, select, update

from exchange.store import Store, audit
from exchange.store.engine import serialise_audit
from exchange.store.integrity import Integrity
from exchange.store.schema import audit as audit_table
from exchange.store.schema import meta
from tests.backends import Backend

THREADS = 8


def _store(backend: Backend, tmp_path: Path) -> Store:
    return Store.open(backend.migrated(tmp_path / "db"), agency="JPN-NPA", seal=Integrity(b"\x03" * 32))


def _commits(store: Store) -> list[int]:
    counted: list[int] = []

    @event.listens_for(store.engine, "commit")
    def _count(_conn: Any) -> None:
        counted.append(1)

    return counted


def test_entries_queued_behind_a_commit_share_the_next_one(backend: Backend, tmp_path: Path) -> None:
    store = _store(backend, tmp_path)
    try:
        seqs: dict[int, int] = {}
        held, release = threading.Event(), threading.Event()

        def hold_the_chain() -> None:
            with store.write() as tx:  # the chain's lock (and SQLite's write lock), held
                serialise_audit(tx)
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_chain)
        holder.start()
        assert held.wait(10)
        commits = _commits(store)

        def disclose(n: int) -> None:
            seqs[n] = audit.record(store, actor=f"user-{n}", action="get", detail={"n": n})

        threads = [threading.Thread(target=disclose, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # the first leads (blocked on the held lock); the rest queue behind it
        assert seqs == {}  # nobody answered before its entry committed
        release.set()
        holder.join(10)
        for thread in threads:
            thread.join(10)
        assert sorted(seqs.values()) == list(range(1, THREADS + 1))
        # The holder's, then the first entry alone, then the seven queued behind it together.
        assert len(commits) == 3
        entries = {e.seq: e for e in audit.read_entries(store)}
        assert all(entries[seq].detail == {"n": n} and entries[seq].actor == f"user-{n}" for n, seq in seqs.items())
        assert audit.verify_store(store) == []
    finally:
        store.close()


def test_a_bad_entry_fails_alone_and_concurrent_ones_all_land(backend: Backend, tmp_path: Path) -> None:
    store = _store(backend, tmp_path)
    try:
        with pytest.raises(TypeError):
            audit.record(store, actor="user", action="get", detail={"not json": object()})
        done: list[int] = []
        lock = threading.Lock()

        def disclose(n: int) -> None:
            for i in range(20):
                seq = audit.record(store, actor=f"user-{n}", action="search", detail={"n": n, "i": i})
                with lock:
                    done.append(seq)

        threads = [threading.Thread(target=disclose, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(done) == list(range(1, THREADS * 20 + 1))
        assert len(audit.read_entries(store)) == THREADS * 20
        assert audit.verify_store(store) == []
    finally:
        store.close()


def _statements(store: Store) -> list[str]:
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split())[:40])

    return seen


def test_a_disclosure_after_the_first_is_one_statement_on_postgresql(backend: Backend, tmp_path: Path) -> None:
    """PostgreSQL: each statement is a round trip, so once the group knows the head it wrote
    last, the next disclosure appends after it in one statement (lock, head, entries)."""
    store = _store(backend, tmp_path)
    try:
        assert audit.record(store, actor="user", action="get", detail={"n": 0}) == 1  # reads the head
        seen = _statements(store)
        for n in range(1, 4):
            assert audit.record(store, actor="user", action="search", detail={"n": n}) == n + 1
        if backend.name == "postgresql":
            assert len(seen) == 3 and all(s.startswith("WITH locked AS") for s in seen)
        else:  # SQLite: no round trips to save; lock, head, entries and head as before
            assert len(seen) >= 3 * 3
        assert [e.detail["n"] for e in audit.read_entries(store)] == [0, 1, 2, 3]
        assert audit.verify_store(store) == []
    finally:
        store.close()


def test_a_head_another_writer_moved_is_read_again(backend: Backend, tmp_path: Path) -> None:
    """Another replica's disclosure, or a submission's entry, moves the head this process wrote
    last: the next disclosure finds it moved, writes nothing, and appends after the new head."""
    url = backend.migrated(tmp_path / "db")
    seal = Integrity(b"\x03" * 32)
    first, second = (Store.open(url, agency="JPN-NPA", seal=seal) for _ in range(2))
    try:
        assert audit.record(first, actor="a", action="get", detail={"n": 1}) == 1
        assert audit.record(second, actor="b", action="get", detail={"n": 2}) == 2  # another replica
        assert audit.record(first, actor="a", action="get", detail={"n": 3}) == 3
        with first.write() as tx:  # a submission's entry, in its own write transaction
            audit.append_many(tx, at=1, entries=[("sato", "submit", {"n": 4})])
        assert audit.record(first, actor="a", action="get", detail={"n": 5}) == 5
        assert audit.record(second, actor="b", action="get", detail={"n": 6}) == 6
        entries = audit.read_entries(first)
        assert [(e.seq, e.detail["n"]) for e in entries] == [(n, n) for n in range(1, 7)]
        assert audit.verify_store(first) == []
    finally:
        first.close()
        second.close()


def test_two_replicas_disclosing_at_once_keep_one_chain(backend: Backend, tmp_path: Path) -> None:
    """Two stores on one database (replicas), each appending after the head it wrote last while
    the other moves it: every entry lands once, in one chain that verifies."""
    url = backend.migrated(tmp_path / "db")
    seal = Integrity(b"\x03" * 32)
    stores = [Store.open(url, agency="JPN-NPA", seal=seal) for _ in range(2)]
    try:
        done: list[int] = []
        lock = threading.Lock()

        def disclose(store: Store, n: int) -> None:
            for i in range(15):
                seq = audit.record(store, actor=f"user-{n}", action="search", detail={"n": n, "i": i})
                with lock:
                    done.append(seq)

        threads = [threading.Thread(target=disclose, args=(stores[n % 2], n)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(done) == list(range(1, 6 * 15 + 1))
        entries = audit.read_entries(stores[0])
        assert sorted((e.detail["n"], e.detail["i"]) for e in entries) == [(n, i) for n in range(6) for i in range(15)]
        assert audit.verify_store(stores[0]) == []
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize("insider", ["head moved back", "entries deleted, head left"])
def test_a_chain_cut_while_the_node_runs_is_never_extended_as_if_intact(
    backend: Backend, tmp_path: Path, insider: str
) -> None:
    """The group remembers the head it wrote last (on PostgreSQL it appends after it in one
    statement). An insider who cuts the chain between two disclosures gains nothing from that:
    a head moved back is read again (the anchor, ahead of it, says the chain was cut), and
    entries deleted under an unchanged head leave a gap that verification names."""
    url = backend.migrated(tmp_path / "db")
    store = Store.open(url, agency="JPN-NPA", seal=Integrity(b"\x03" * 32, anchor=tmp_path / "anchor"))
    try:
        for n in range(1, 4):
            assert audit.record(store, actor="user", action="get", detail={"n": n}) == n
        first = audit.read_entries(store)[0]
        with store.engine.begin() as conn:  # the insider, with write access to the database
            conn.execute(delete(audit_table).where(audit_table.c.seq > 1))
            if insider == "head moved back":
                head = (1).to_bytes(8, "big") + bytes(conn.execute(
                    select(audit_table.c.hash).where(audit_table.c.seq == 1)).scalar_one())
                conn.execute(update(meta).where(meta.c.key == audit.HEAD_KEY).values(value=head))
        seq = audit.record(store, actor="user", action="get", detail={"n": 4})
        entries = audit.read_entries(store)
        if insider == "head moved back":
            # Chained after the head the database holds, not the one remembered (entry 3, gone).
            assert seq == 2 and [e.seq for e in entries] == [1, 2] and entries[0] == first
            assert any("does not reach the anchored head" in p for p in audit.verify_store(store))
        else:
            assert seq == 4 and [e.seq for e in entries] == [1, 4]
            assert "entry 2 is missing (next is 4)" in audit.verify_store(store)
    finally:
        store.close()
