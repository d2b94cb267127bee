"""Disclosures recorded at once by many threads share one commit (group commit), and each
caller returns only once its own entry is committed, in a chain that still verifies."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from exchange.store import Store, audit
from exchange.store.engine import serialise_audit
from exchange.store.integrity import Integrity
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
