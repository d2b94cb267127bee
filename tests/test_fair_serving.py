"""Fair serving: a hostile partner, with its legitimately issued node certificate and the
real protocol, cannot take the capacity the node's users and other partners need.

The partner opens Pull streams and never reads them: the node has enough data for each
to fill the client's flow-control window (large records, a client channel with a small
window), so the server's send really blocks, as it did when 16 such streams pinned
every thread of a node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.config import Limits, load_node_config
from exchange.errors import ConfigError
from exchange.node.admission import TokenBucket
from exchange.node.server import Node
from exchange.v1 import query_pb2, records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft
from tests.fill import fill

KOR_NODE = "urn:exchange:KOR-KNPA:node"
PER_PARTNER = 2
STALL_SECONDS = 4
# The hostile client's channel: no window growth (BDP probing) and little read-ahead, so
# the server can hand it only a few tens of KB before its send waits for a read.
SMALL_WINDOW = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024))

LIMITS = Limits(
    rpc_threads=4 * PER_PARTNER,  # as many threads as the hostile partner opens streams
    partner_concurrent_calls=PER_PARTNER, all_partners_concurrent_calls=2 * PER_PARTNER,
    stream_stall_seconds=STALL_SECONDS, stream_max_seconds=60,
)


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def partner_sync(federation: Federation, node: Node, agency: str, **kwargs: object) -> sync_pb2_grpc.SyncServiceStub:
    return sync_pb2_grpc.SyncServiceStub(federation.node_channel(node, agency, **kwargs))  # type: ignore[arg-type]


def status(call: grpc.Future[object]) -> grpc.StatusCode | None:
    """The status of a call that has ended, else None (never waits)."""
    if not call.done():
        return None
    code: grpc.StatusCode = call.code()  # type: ignore[attr-defined]
    return code


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path) -> Node:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn", limits=LIMITS)
    # 40 records of about 54 KB each for KOR-KNPA: one pull batch is far more than a
    # flow-control window, so a stream nobody reads stalls in the server's send.
    marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["KOR-KNPA"], tlp="GREEN")
    fill(node.store, federation.manifest, federation.pki_dir, "JPN-NPA", 40, marking=marking, summary="迂回" * 9000)
    return node


def test_unread_streams_of_one_partner_take_nothing_from_users_or_other_partners(
    federation: Federation, jpn: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    assert usa.puller.pull("JPN-NPA").error == ""  # USA-DTSF is in step before the attack
    hostile = partner_sync(federation, jpn, "KOR-KNPA", options=SMALL_WINDOW)

    # 4x the per-partner bound of Pull streams, opened and never read.
    opened = time.monotonic()
    streams = [hostile.Pull(sync_pb2.PullRequest(), timeout=120) for _ in range(4 * PER_PARTNER)]
    wait_for(lambda: sum(status(s) == grpc.StatusCode.RESOURCE_EXHAUSTED for s in streams) == 3 * PER_PARTNER,
             "the streams over the partner's bound to be refused", timeout=10)
    refused = next(s for s in streams if status(s) is not None)
    assert "partner_concurrent_calls" in (refused.details() or "")  # type: ignore[attr-defined]
    stalled = [s for s in streams if status(s) is None]
    assert len(stalled) == PER_PARTNER and jpn.admission.in_progress(KOR_NODE) == PER_PARTNER

    # Meanwhile a user's Search and another partner's pull take their usual time.
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    searched = timed(lambda: analyst.query.Search(query_pb2.SearchRequest(page_size=5), timeout=5))
    analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft(marking=records_pb2.Marking(
        classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER"))), timeout=5)
    pulled: list[int] = []
    pull_seconds = timed(lambda: pulled.append(usa.puller.pull("JPN-NPA").applied.stored))
    assert searched < 1.0 and pull_seconds < 1.0 and pulled == [1]
    # ...while the hostile streams were still pinned in the server's send.
    assert jpn.admission.in_progress(KOR_NODE) == PER_PARTNER

    # The stalled streams are cancelled within the configured bound, and their slots freed.
    wait_for(lambda: jpn.admission.in_progress(KOR_NODE) == 0, "the stalled streams to be cancelled",
             timeout=STALL_SECONDS + 5)
    assert time.monotonic() - opened < STALL_SECONDS + 3
    cancelled_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cancelled ")]
    assert cancelled_lines == [f"cancelled exchange.v1.SyncService/Pull from {KOR_NODE}: its client took no message "
                               f"for {STALL_SECONDS} s (stream_stall_seconds)"] * PER_PARTNER
    for stream in stalled:
        with pytest.raises(grpc.RpcError) as cancelled:
            for _ in stream:  # what was buffered before the server gave up, then the status
                pass
        assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    # The partner is served again once it reads what it asks for.
    assert sum(len(b.entries) for b in partner_sync(federation, jpn, "KOR-KNPA").Pull(
        sync_pb2.PullRequest(), timeout=30)) == 40


def test_a_partner_over_its_digest_rate_is_refused(federation: Federation, tmp_path: Path) -> None:
    limits = Limits(digest_burst_calls=3, digest_calls_per_minute=1)
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", limits=limits)
    kor = partner_sync(federation, jpn, "KOR-KNPA")
    for _ in range(3):
        kor.Digest(sync_pb2.DigestRequest(), timeout=5)
    with pytest.raises(grpc.RpcError) as refused:
        kor.Digest(sync_pb2.DigestRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "digest_calls_per_minute" in (refused.value.details() or "")
    # The bucket is the partner's own: another partner's digest is answered.
    partner_sync(federation, jpn, "USA-DTSF").Digest(sync_pb2.DigestRequest(), timeout=5)


def test_a_partner_over_its_rate_of_pulls_from_an_empty_cursor_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn",
                                limits=Limits(empty_cursor_burst_pulls=2, empty_cursor_pulls_per_hour=1))
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 1)
    kor = partner_sync(federation, jpn, "KOR-KNPA")
    cursor = b""
    for _ in range(2):
        cursor = [b.cursor for b in kor.Pull(sync_pb2.PullRequest(), timeout=5)][-1]
    with pytest.raises(grpc.RpcError) as refused:
        list(kor.Pull(sync_pb2.PullRequest(), timeout=5))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "empty_cursor_pulls_per_hour" in (refused.value.details() or "")
    list(kor.Pull(sync_pb2.PullRequest(cursor=cursor), timeout=5))  # resuming is not limited


def test_a_pull_from_an_empty_log_gets_a_cursor_to_resume_from(federation: Federation, tmp_path: Path) -> None:
    """A partner that pulls on a schedule from a node with nothing logged yet resumes from a
    cursor, so its pulls do not spend its allowance of pulls from an empty cursor."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn",
                                limits=Limits(empty_cursor_burst_pulls=1, empty_cursor_pulls_per_hour=1))
    kor = partner_sync(federation, jpn, "KOR-KNPA")
    [batch] = list(kor.Pull(sync_pb2.PullRequest(), timeout=5))
    assert list(batch.entries) == [] and batch.cursor
    for _ in range(3):
        assert list(kor.Pull(sync_pb2.PullRequest(cursor=batch.cursor), timeout=5)) == []
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 2)
    assert sum(len(b.entries) for b in kor.Pull(sync_pb2.PullRequest(cursor=batch.cursor), timeout=5)) == 2


def _watch(channel: grpc.Channel) -> Iterator[health_pb2.HealthCheckResponse]:
    stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
    responses: Iterator[health_pb2.HealthCheckResponse] = stub.Watch(health_pb2.HealthCheckRequest(), timeout=30)
    return responses


def test_a_user_has_a_bound_on_calls_in_progress(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", limits=Limits(user_concurrent_calls=2))
    channel = federation.user_channel(jpn, "JPN-NPA", "suzuki")
    watches = [_watch(channel) for _ in range(2)]
    for watch in watches:
        next(watch)  # both are running
    with pytest.raises(grpc.RpcError) as refused:
        next(_watch(channel))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "user_concurrent_calls" in (refused.value.details() or "")
    # Another user is not affected.
    next(_watch(federation.user_channel(jpn, "JPN-NPA", "sato")))


def test_partners_health_watches_leave_the_users_theirs(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    partners = [federation.node_channel(jpn, agency) for agency in ("KOR-KNPA", "USA-DTSF")]
    watches = [_watch(partners[i % 2]) for i in range(4)]
    for watch in watches:
        next(watch)
    with pytest.raises(grpc.RpcError) as refused:
        next(_watch(partners[0]))  # the partners' watches are all taken...
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    next(_watch(federation.user_channel(jpn, "JPN-NPA", "suzuki")))  # ...not the users'


def test_a_stream_is_cancelled_at_the_end_of_its_life(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", limits=Limits(stream_max_seconds=1))
    watch = _watch(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    started = time.monotonic()
    next(watch)
    with pytest.raises(grpc.RpcError) as cancelled:
        next(watch)  # no change of health comes; the node ends the stream
    assert cancelled.value.code() == grpc.StatusCode.CANCELLED
    assert time.monotonic() - started < 3


def test_bounds_that_would_leave_users_no_thread_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\n'
                      "[limits]\nrpc_threads = 8\nall_partners_concurrent_calls = 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"all_partners_concurrent_calls \(8\) must be below rpc_threads \(8\)"):
        load_node_config(config)


def test_a_token_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(2, per_second=0.5, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 2.0]
    assert bucket.take(101.0) == pytest.approx(1.0)
    assert bucket.take(102.0) == 0.0 and bucket.take(102.0) == 2.0
