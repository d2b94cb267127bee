"""Pulling between two real nodes: verify, store, resume, idempotence, catch-up."""

from __future__ import annotations

from pathlib import Path

from exchange.node.server import Node
from exchange.store.peers import peer_cursor, peer_states
from exchange.store.received import apply_batch
from exchange.v1 import query_pb2, records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft


def _marking(rel: list[str], classification: str = "CONFIDENTIAL") -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=rel, tlp="AMBER")


def _submit(federation: Federation, node: Node, title: str, rel: list[str]) -> records_pb2.RecordRef:
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    request = submission_pb2.SubmitRequest(draft=draft(title=title, marking=_marking(rel)))
    return analyst.submission.Submit(request).receipt.ref


def _held(node: Node) -> dict[tuple[str, str], int]:
    with node.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT originator, record_id, version FROM records").all()
    return {(o, r): v for o, r, v in rows}


def test_partner_pulls_verifies_and_its_liaison_finds_the_record(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    shared = _submit(federation, jpn, "第三国経由の迂回輸出", ["USA-DTSF"])
    _submit(federation, jpn, "韓国のみ", ["KOR-KNPA"])
    report = usa.puller.pull("JPN-NPA")
    assert report.error == "" and report.applied.stored == 1 and report.applied.refused == 0
    assert _held(usa) == {("JPN-NPA", shared.record_id): 1}
    liaison = UserClient.of(federation.user_channel(usa, "USA-DTSF", "rchen"))
    found = liaison.query.Search(query_pb2.SearchRequest(text="迂回"), timeout=10)
    assert [h.received_from for h in found.records] == ["JPN-NPA"]
    # Nothing new: no entries, the same cursor.
    cursor = peer_cursor(usa.store, "JPN-NPA")
    again = usa.puller.pull("JPN-NPA")
    assert again.received == 0 and peer_cursor(usa.store, "JPN-NPA") == cursor


def test_interrupted_stream_resumes_from_its_cursor(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    refs = [_submit(federation, jpn, f"記録 {i}", ["USA-DTSF"]) for i in range(12)]
    usa.puller.limits = usa.puller.limits.__class__(pull_batch_entries=3, pull_max_entries=5)
    first = usa.puller.pull("JPN-NPA")  # stops after two batches (6 entries >= 5)
    assert first.received == 6 and first.truncated and first.error == ""
    rest = usa.puller.pull("JPN-NPA")
    assert rest.received == 6 and rest.applied.duplicates == 0
    assert set(_held(usa)) == {("JPN-NPA", r.record_id) for r in refs}


def test_applying_the_same_batch_twice_changes_nothing(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    for i in range(3):
        _submit(federation, jpn, f"重複 {i}", ["USA-DTSF"])
    batches = list(usa.puller.stub("JPN-NPA").Pull(sync_pb2.PullRequest(), timeout=10))
    entries = [usa.puller.verifier.check(e, "JPN-NPA") for b in batches for e in b.entries]
    first = apply_batch(usa.store, "JPN-NPA", entries, batches[-1].cursor)
    held = _held(usa)
    with usa.store.engine.connect() as conn:
        log_rows = conn.exec_driver_sql("SELECT count(*) FROM log").scalar_one()
    second = apply_batch(usa.store, "JPN-NPA", entries, batches[-1].cursor)
    assert first.stored == 3 and second.stored == 0 and second.duplicates == 3
    assert _held(usa) == held
    with usa.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM log").scalar_one() == log_rows


def test_a_peer_down_for_a_while_is_caught_up(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    _submit(federation, jpn, "before", ["USA-DTSF"])
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    jpn.stop(grace=0)
    federation.nodes.remove(jpn)
    down = usa.puller.pull("JPN-NPA")
    assert down.error.startswith("UNAVAILABLE")
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    later = [_submit(federation, jpn, f"while down {i}", ["USA-DTSF"]) for i in range(3)]
    back = usa.puller.pull("JPN-NPA")
    assert back.error == "" and back.applied.stored == 3
    assert {("JPN-NPA", r.record_id) for r in later} <= set(_held(usa))


def test_the_schedule_pulls_each_peer_on_its_own(federation: Federation, tmp_path: Path) -> None:
    import time

    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa", peers=("JPN-NPA", "KOR-KNPA"), schedule=True,
                                interval=0.2)  # KOR-KNPA is down: backs off, never blocks JPN-NPA
    ref = _submit(federation, jpn, "scheduled", ["USA-DTSF"])
    deadline = time.monotonic() + 10
    assert usa.schedule is not None
    while ("JPN-NPA", ref.record_id) not in _held(usa) or "KOR-KNPA" not in usa.schedule.last:
        assert time.monotonic() < deadline, "the schedule did not pull"
        time.sleep(0.05)
    assert usa.schedule.last["KOR-KNPA"].error.startswith("UNAVAILABLE")


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    import random

    from exchange.sync.schedule import JITTER, MAX_BACKOFF_SECONDS, next_delay

    rng = random.Random(7)
    for failures, base in ((0, 5.0), (1, 10.0), (3, 40.0), (20, MAX_BACKOFF_SECONDS)):
        delays = [next_delay(5.0, failures, rng) for _ in range(200)]
        assert all(base * (1 - JITTER) <= d <= base * (1 + JITTER) for d in delays)
        assert max(delays) - min(delays) > base * JITTER  # jittered, not constant


def test_stubs_taken_while_another_thread_closes_the_channels_never_crash(
    federation: Federation, tmp_path: Path,
) -> None:
    """gRPC registers a stub's methods on the channel's core object; registering on a channel
    another thread just closed is a use after free that takes the process down (grpcio 1.85).
    A renewal of the node certificate (or the node stopping) closes the puller's channels
    while the schedule and the manifest fetch take stubs: they must never interleave."""
    import sys
    import threading
    import time

    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    ref = _submit(federation, jpn, "after the renewals", ["USA-DTSF"])
    done = threading.Event()

    def renew() -> None:
        while not done.is_set():
            usa.puller.use_certificate(usa.tls.key, usa.tls.cert)

    renewing = threading.Thread(target=renew, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads change hands as often as CPython allows: the race is likely
    renewing.start()
    try:
        deadline = time.monotonic() + 1
        taken = 0
        while time.monotonic() < deadline:
            usa.puller.stub("JPN-NPA")
            taken += 1
    finally:
        done.set()
        renewing.join(timeout=10)
        sys.setswitchinterval(interval)
    assert taken > 100 and not renewing.is_alive()
    report = usa.puller.pull("JPN-NPA")
    assert report.error == "" and ("JPN-NPA", ref.record_id) in _held(usa)


def test_a_channel_closed_as_a_call_starts_is_a_pull_error_not_a_crash(
    federation: Federation, tmp_path: Path,
) -> None:
    """The other thread wins the race just after a stub was taken: gRPC refuses the call with a
    ValueError, which the pull reports as its error (the schedule tries again), and the next pull,
    on a fresh channel, brings the record."""
    from exchange.sync.puller import Puller

    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    ref = _submit(federation, jpn, "pulled the second time", ["USA-DTSF"])
    puller = usa.puller

    def stub_then_renewal(peer: str) -> sync_pb2_grpc.SyncServiceStub:
        stub = Puller.stub(puller, peer)
        puller.use_certificate(usa.tls.key, usa.tls.cert)  # closes the channel under the stub
        return stub

    puller.stub = stub_then_renewal  # type: ignore[method-assign]
    report = puller.pull("JPN-NPA")
    assert report.error.startswith("the connection was closed as a call started")
    assert ("JPN-NPA", ref.record_id) not in _held(usa)
    noted = {state.agency: state.last_error for state in peer_states(usa.store)}
    assert noted["JPN-NPA"] == report.error  # what `exchange sync status` shows of the partner
    del puller.stub  # the class's own again
    again = puller.pull("JPN-NPA")
    assert again.error == "" and ("JPN-NPA", ref.record_id) in _held(usa)
