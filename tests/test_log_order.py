"""The log never loses an entry to commit order, and no writer stalls a puller.

Two writers on one database are two ``Store`` objects (as two replicas of a node
would be, each with its own connections and its own in-process lock). Writer A
appends and sits idle in its open transaction; writer B tries to append behind it;
a partner pulls through the real Sync service meanwhile and afterwards. Appends are
serialised (exchange/store/engine.py), so B cannot allocate a sequence number until A
has committed: the puller, whatever the commit order, receives every entry exactly once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from exchange.core.policy import holders
from exchange.node.server import Node, load_signer
from exchange.records.envelope import RECORD_TYPE, content_hash, open_record
from exchange.store import Store, audit
from exchange.store.log import log_end, log_entries
from exchange.store.received import Incoming, apply_entries
from exchange.store.store import marking_of
from exchange.v1 import records_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation
from tests.fill import fill, make_record

PULL_TIMEOUT = 5.0  # a stalled puller would run into this
RELEASED = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER")


def _entry(federation: Federation, i: int) -> tuple[Incoming, str]:
    signer = load_signer("JPN-NPA", federation.pki_dir / "JPN-NPA" / "signing.key", federation.manifest)
    record = make_record("JPN-NPA", i, RELEASED)
    envelope = signer.seal(RECORD_TYPE, record.SerializeToString())
    accreditations = {code: p.accreditation for code, p in federation.manifest.partners.items()}
    audience = holders(originator="JPN-NPA", marking=marking_of(RELEASED), accreditations=accreditations)
    return Incoming(envelope, content_hash(envelope.payload), audience, record=record), record.ref.record_id


class Puller:
    """USA-DTSF pulling from JPN-NPA's node through the real Sync service, keeping its cursor."""

    def __init__(self, federation: Federation, node: Node) -> None:
        key = (federation.pki_dir / "USA-DTSF" / "node.key").read_bytes()
        cert = (federation.pki_dir / "USA-DTSF" / "node.crt").read_bytes()
        self._stub = sync_pb2_grpc.SyncServiceStub(
            federation.channel(node.port, server_agency="JPN-NPA", key=key, cert=cert))
        self._manifest = federation.manifest
        self.cursor = b""
        self.received: list[str] = []  # record ids, in the order received, duplicates kept

    def pull(self) -> tuple[list[str], float]:
        started = time.monotonic()
        got = []
        for batch in self._stub.Pull(sync_pb2.PullRequest(cursor=self.cursor), timeout=PULL_TIMEOUT):
            got += [open_record(e, self._manifest).ref.record_id for e in batch.entries]
            self.cursor = batch.cursor
        self.received += got
        return got, time.monotonic() - started


class Writer(threading.Thread):
    """Appends entries in one write transaction, then waits to be told to commit (or roll back)."""

    def __init__(self, store: Store, entries: list[Incoming], *, fail: bool = False) -> None:
        super().__init__(daemon=True)
        self._store, self._entries, self._fail = store, entries, fail
        self.appended = threading.Event()  # its entries are in the log, uncommitted
        self.finish = threading.Event()  # set by the test: commit (or roll back) now
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self._store.write() as conn:
                apply_entries(conn, "JPN-NPA", list(self._entries))
                self.appended.set()
                self.finish.wait(30)
                if self._fail:
                    raise RuntimeError("this writer rolls back")
        except RuntimeError:
            pass
        except BaseException as error:  # surfaced by the test
            self.error = error
        finally:
            self.done.set()


def _second_store(federation: Federation, data_dir: Path) -> Store:
    return Store.open(federation.backend.url(data_dir), agency="JPN-NPA", seal=federation.seal("JPN-NPA", data_dir))


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path) -> Node:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    fill(node.store, federation.manifest, federation.pki_dir, "JPN-NPA", 3, marking=RELEASED)
    return node


def test_writers_out_of_order_and_idle_never_cost_the_puller_an_entry(
    federation: Federation, jpn: Node, tmp_path: Path
) -> None:
    puller = Puller(federation, jpn)
    assert len(puller.pull()[0]) == 3

    replica = _second_store(federation, tmp_path / "jpn")
    (a_entry, a_id), (b_entry, b_id) = _entry(federation, 1), _entry(federation, 2)
    a = Writer(replica, [a_entry])  # first to reach the log...
    b = Writer(jpn.store, [b_entry])  # ...and this one tries to append (and commit) while A is open
    try:
        a.start()
        assert a.appended.wait(10)
        b.finish.set()  # B would commit at once if it could append
        b.start()
        # B must not append while A is open: watch for it for half a second (it would come at once).
        assert not b.appended.wait(0.5), "a second writer appended while the first was still open"

        # A sits idle in its open transaction: the puller is not held up, and sees nothing uncommitted.
        got, seconds = puller.pull()
        assert got == [] and seconds < PULL_TIMEOUT / 2

        a.finish.set()
        assert a.done.wait(10) and b.done.wait(10)
        assert a.error is None and b.error is None
        got, _ = puller.pull()
        assert got == [a_id, b_id]  # in commit order, which is sequence order
        assert puller.pull()[0] == []
        assert sorted(puller.received) == sorted(set(puller.received))  # nothing twice
    finally:
        a.finish.set()
        b.finish.set()
        replica.close()


def test_a_writer_that_rolls_back_leaves_no_gap_that_stalls_or_loses(
    federation: Federation, jpn: Node, tmp_path: Path
) -> None:
    puller = Puller(federation, jpn)
    puller.pull()
    replica = _second_store(federation, tmp_path / "jpn")
    (doomed, doomed_id), (c_entry, c_id) = _entry(federation, 1), _entry(federation, 2)
    try:
        rolled_back = Writer(replica, [doomed], fail=True)
        rolled_back.start()
        assert rolled_back.appended.wait(10)
        got, seconds = puller.pull()  # the doomed entry is uncommitted: not served, no wait
        assert got == [] and seconds < PULL_TIMEOUT / 2
        rolled_back.finish.set()
        assert rolled_back.done.wait(10) and rolled_back.error is None

        after = Writer(jpn.store, [c_entry])  # takes the number the rolled-back writer had
        after.finish.set()
        after.start()
        assert after.done.wait(10) and after.error is None
        got, _ = puller.pull()
        assert got == [c_id] and doomed_id not in puller.received
    finally:
        replica.close()


def test_an_idle_open_transaction_does_not_stall_the_puller(federation: Federation, jpn: Node) -> None:
    puller = Puller(federation, jpn)
    puller.pull()
    idle = jpn.store.engine.connect()
    try:
        idle.exec_driver_sql("SELECT count(*) FROM log").scalar_one()  # a transaction that started, then idles
        for i in range(3):
            entry, record_id = _entry(federation, 10 + i)
            writer = Writer(jpn.store, [entry])
            writer.finish.set()
            writer.start()
            assert writer.done.wait(10) and writer.error is None
            got, seconds = puller.pull()
            assert got == [record_id] and seconds < PULL_TIMEOUT / 2
    finally:
        idle.rollback()
        idle.close()


def test_concurrent_batches_from_two_replicas_interleave_without_loss(
    federation: Federation, jpn: Node, tmp_path: Path
) -> None:
    """Many small writes from two stores at once, a puller pulling all along: each entry once."""
    puller = Puller(federation, jpn)
    puller.pull()
    replica = _second_store(federation, tmp_path / "jpn")
    expected: set[str] = set()
    writers: list[Writer] = []
    for i in range(20):
        entry, record_id = _entry(federation, 100 + i)
        expected.add(record_id)
        writer = Writer(replica if i % 2 else jpn.store, [entry])
        writer.finish.set()
        writers.append(writer)
    try:
        for writer in writers:
            writer.start()
        while not all(w.done.is_set() for w in writers):
            puller.pull()
        assert all(w.error is None for w in writers)
        puller.pull()  # everything is committed now
        received = [r for r in puller.received if r in expected]
        assert sorted(received) == sorted(expected)  # every entry, none twice
    finally:
        replica.close()


def test_a_pull_with_entries_to_send_does_not_wait_for_an_idle_writer(
    federation: Federation, jpn: Node, tmp_path: Path
) -> None:
    """Serving a batch writes its disclosure to the audit chain, which has its own lock on
    PostgreSQL: a writer idle in its transaction does not hold it up. SQLite has one write
    lock for everything, so there the pull waits for the writer; both deliver each entry once."""
    puller = Puller(federation, jpn)
    earlier = len(puller.pull()[0])
    committed = []
    for i in range(2):
        entry, record_id = _entry(federation, 200 + i)
        writer = Writer(jpn.store, [entry])
        writer.finish.set()
        writer.start()
        assert writer.done.wait(10) and writer.error is None
        committed.append(record_id)

    replica = _second_store(federation, tmp_path / "jpn")
    idle_entry, idle_id = _entry(federation, 300)
    idle = Writer(replica, [idle_entry])
    result: list[list[str]] = []
    pulling = threading.Thread(target=lambda: result.append(puller.pull()[0]), daemon=True)
    try:
        idle.start()
        assert idle.appended.wait(10)
        pulling.start()
        pulling.join(PULL_TIMEOUT / 2)
        if federation.backend.name == "postgresql":
            assert not pulling.is_alive(), "the pull waited for a writer idle in its transaction"
            assert result == [committed]
        else:
            assert pulling.is_alive()  # SQLite: one writer at a time, the disclosure's audit included
        idle.finish.set()
        assert idle.done.wait(10) and idle.error is None
        pulling.join(PULL_TIMEOUT)
        assert not pulling.is_alive()
        puller.pull()
        assert sorted(puller.received[earlier:]) == sorted([*committed, idle_id])  # each once
        assert audit.verify_store(jpn.store) == []
    finally:
        idle.finish.set()
        replica.close()


def test_sequence_numbers_are_never_reused_after_entries_at_the_end_are_dropped(
    federation: Federation, jpn: Node
) -> None:
    """A manifest change drops records the node may no longer hold, log entries and all; a
    partner's cursor may already point past them, so their numbers are never handed out again."""
    from exchange.store.current import reevaluate_holdings

    fill(jpn.store, federation.manifest, federation.pki_dir, "KOR-KNPA", 5, marking=records_pb2.Marking(
        classification="CONFIDENTIAL", releasable_to=["JPN-NPA"], tlp="AMBER"))
    top = log_end(jpn.store)
    assert reevaluate_holdings(jpn.store, lambda originator, _marking: originator != "KOR-KNPA") == 5
    assert log_end(jpn.store) == top - 5  # the end of the log was dropped...
    entry, record_id = _entry(federation, 400)
    writer = Writer(jpn.store, [entry])
    writer.finish.set()
    writer.start()
    assert writer.done.wait(10) and writer.error is None
    [row] = log_entries(jpn.store, "JPN-NPA", record_id)
    assert row.seq == top + 1  # ...and its numbers are not reused
