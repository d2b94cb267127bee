"""Serving pulls: a partner node receives exactly what the decision releases to it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from exchange.core.manifest import Manifest
from exchange.node.server import Node
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, open_record, open_withdrawal
from exchange.v1 import records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft


def _marking(classification: str, rel: list[str], tlp: str = "AMBER", caveats: list[str] | None = None
             ) -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=rel, tlp=tlp, caveats=caveats or [])


def _partner(federation: Federation, node: Node, agency: str) -> sync_pb2_grpc.SyncServiceStub:
    key = (federation.pki_dir / agency / "node.key").read_bytes()
    cert = (federation.pki_dir / agency / "node.crt").read_bytes()
    return sync_pb2_grpc.SyncServiceStub(federation.channel(node.port, server_agency=node.config.agency, key=key,
                                                     cert=cert))


def _pull(manifest: Manifest, stub: sync_pb2_grpc.SyncServiceStub, cursor: bytes = b"", max_entries: int = 0
          ) -> tuple[list[records_pb2.Record], bytes, int]:
    """Pull to the end; every entry must verify as the originator's signed record."""
    records, batches = [], 0
    for batch in stub.Pull(sync_pb2.PullRequest(cursor=cursor, max_entries=max_entries), timeout=10):
        batches += 1
        records += [open_record(e, manifest) for e in batch.entries if e.payload_type == RECORD_TYPE]
        cursor = batch.cursor
    return records, cursor, batches


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path) -> Node:
    return federation.start_node("JPN-NPA", tmp_path / "jpn")


def _submit(federation: Federation, node: Node, marking: records_pb2.Marking, title: str) -> str:
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft(title=title, marking=marking))).receipt
    return receipt.ref.record_id


def test_partner_receives_exactly_what_is_released_to_it(federation: Federation, jpn: Node) -> None:
    to_usa = _submit(federation, jpn, _marking("CONFIDENTIAL", ["USA-DTSF"]), "to usa")
    to_kor = _submit(federation, jpn, _marking("CONFIDENTIAL", ["KOR-KNPA"]), "to kor")
    secret_all = _submit(federation, jpn, _marking("SECRET", ["USA-DTSF", "GBR-NPSA"]), "secret")
    _submit(federation, jpn, _marking("RESTRICTED", []), "jpn only")
    usa, _, _ = _pull(federation.manifest, _partner(federation, jpn, "USA-DTSF"))
    kor, _, _ = _pull(federation.manifest, _partner(federation, jpn, "KOR-KNPA"))
    gbr, _, _ = _pull(federation.manifest, _partner(federation, jpn, "GBR-NPSA"))  # accredited CONFIDENTIAL only
    assert {r.ref.record_id for r in usa} == {to_usa, secret_all}
    assert {r.ref.record_id for r in kor} == {to_kor}
    assert gbr == []


def test_cursor_resumes_and_is_opaque(federation: Federation, jpn: Node) -> None:
    stub = _partner(federation, jpn, "USA-DTSF")
    first = [_submit(federation, jpn, _marking("CONFIDENTIAL", ["USA-DTSF"]), f"r{i}") for i in range(5)]
    records, cursor, batches = _pull(federation.manifest, stub, max_entries=2)
    assert [r.ref.record_id for r in records] == first and batches == 3
    again, cursor_again, _ = _pull(federation.manifest, stub, cursor)
    assert again == [] and cursor_again == cursor  # nothing new: no batch, same cursor
    # Entries the puller may not see move its cursor without revealing anything in it.
    _submit(federation, jpn, _marking("CONFIDENTIAL", ["KOR-KNPA"]), "hidden")
    hidden, moved, _ = _pull(federation.manifest, stub, cursor)
    assert hidden == [] and moved != cursor
    assert b"hidden" not in moved and len(moved) == len(cursor)
    later = _submit(federation, jpn, _marking("CONFIDENTIAL", ["USA-DTSF"]), "later")
    assert [r.ref.record_id for r in _pull(federation.manifest, stub, moved)[0]] == [later]


def test_foreign_or_tampered_cursor_is_refused(federation: Federation, jpn: Node) -> None:
    _submit(federation, jpn, _marking("CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA"]), "shared")
    _, cursor, _ = _pull(federation.manifest, _partner(federation, jpn, "USA-DTSF"))
    for stub, bad in (
        (_partner(federation, jpn, "KOR-KNPA"), cursor),  # another partner's cursor
        (_partner(federation, jpn, "USA-DTSF"), cursor[:-1] + bytes([cursor[-1] ^ 1])),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            _pull(federation.manifest, stub, bad)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cursor" in (refused.value.details() or "")


def test_cursor_from_before_a_restore_is_stale(federation: Federation, tmp_path: Path) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    _submit(federation, node, _marking("CONFIDENTIAL", ["USA-DTSF"]), "one")
    federation.stop()
    federation.backend.backup(tmp_path / "jpn", tmp_path)
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    _submit(federation, node, _marking("CONFIDENTIAL", ["USA-DTSF"]), "two")
    _, cursor, _ = _pull(federation.manifest, _partner(federation, node, "USA-DTSF"))
    federation.stop()
    federation.backend.restore(tmp_path / "jpn", tmp_path)
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    _submit(federation, node, _marking("CONFIDENTIAL", ["USA-DTSF"]), "two again")  # seq reused
    with pytest.raises(grpc.RpcError) as stale:
        _pull(federation.manifest, _partner(federation, node, "USA-DTSF"), cursor)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_only_the_current_marking_counts(federation: Federation, jpn: Node) -> None:
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(marking=_marking("CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA"])))).receipt
    analyst.submission.Revise(submission_pb2.ReviseRequest(
        ref=receipt.ref, base_version=1, draft=draft(marking=_marking("CONFIDENTIAL", ["USA-DTSF"]))))
    kor_stub = _partner(federation, jpn, "KOR-KNPA")
    kor, _, _ = _pull(federation.manifest, kor_stub)
    assert kor == []  # version 1 is not served under the rules version 2 narrowed
    # What KOR-KNPA gets instead is the signed, content-free withdrawal of the earlier versions.
    served = [e for batch in kor_stub.Pull(sync_pb2.PullRequest(), timeout=10) for e in batch.entries]
    assert [e.payload_type for e in served] == [WITHDRAWAL_TYPE]
    withdrawal = open_withdrawal(served[0], federation.manifest)
    assert (withdrawal.ref, withdrawal.version) == (receipt.ref, 2)
    usa, _, _ = _pull(federation.manifest, _partner(federation, jpn, "USA-DTSF"))
    assert [r.version for r in usa] == [1, 2]


def test_digest_summarises_only_what_the_caller_may_receive(federation: Federation, jpn: Node) -> None:
    for i in range(6):
        _submit(federation, jpn, _marking("CONFIDENTIAL", ["USA-DTSF"] if i % 2 else ["KOR-KNPA"]), f"d{i}")
    usa = _partner(federation, jpn, "USA-DTSF")
    top = usa.Digest(sync_pb2.DigestRequest(), timeout=10)
    assert [(s.originator, s.count) for s in top.summaries] == [("JPN-NPA", 3)]
    buckets = usa.Digest(sync_pb2.DigestRequest(originator="JPN-NPA"), timeout=10)
    assert sum(s.count for s in buckets.summaries) == 3
    assert all(len(s.bucket_prefix) == 1 for s in buckets.summaries)
    # The same holdings give the same hash; KOR-KNPA's view differs.
    assert usa.Digest(sync_pb2.DigestRequest(), timeout=10).summaries[0].hash == top.summaries[0].hash
    kor = _partner(federation, jpn, "KOR-KNPA").Digest(sync_pb2.DigestRequest(), timeout=10)
    assert kor.summaries[0].count == 3 and kor.summaries[0].hash != top.summaries[0].hash


def test_a_widening_never_releases_an_earlier_version(federation: Federation, jpn: Node) -> None:
    """v1 was for JPN-NPA only; v2 is released to USA-DTSF: USA-DTSF gets v2, never v1's content."""
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(title="SOURCE NAME: agent X", marking=_marking("SECRET", [])))).receipt
    analyst.submission.Revise(submission_pb2.ReviseRequest(
        ref=receipt.ref, base_version=1,
        draft=draft(title="sanitised", marking=_marking("CONFIDENTIAL", ["USA-DTSF"]))))
    usa = _partner(federation, jpn, "USA-DTSF")
    records, _, _ = _pull(federation.manifest, usa)
    assert [(r.version, r.content.title) for r in records] == [(2, "sanitised")]
    digest = usa.Digest(sync_pb2.DigestRequest(), timeout=10)
    assert [(s.originator, s.count) for s in digest.summaries] == [("JPN-NPA", 1)]


def test_a_version_that_forbade_relay_is_not_relayed_after_the_marking_allows_it(
    federation: Federation, tmp_path: Path
) -> None:
    """v1 ORCON reached USA-DTSF; v2 lifts ORCON: USA-DTSF relays v2 to KOR-KNPA, never v1."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    orcon = _marking("CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA"], caveats=["ORCON"])
    request = submission_pb2.SubmitRequest(draft=draft(title="orcon v1", marking=orcon))
    receipt = analyst.submission.Submit(request).receipt
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    analyst.submission.Revise(submission_pb2.ReviseRequest(
        ref=receipt.ref, base_version=1, draft=draft(title="relayable v2", marking=_marking(
            "CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA"]))))
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    relayed, _, _ = _pull(federation.manifest, _partner(federation, usa, "KOR-KNPA"))
    assert [(r.version, r.content.title) for r in relayed] == [(2, "relayable v2")]


def test_a_batch_encoded_from_stored_envelopes_is_the_protobuf_encoding() -> None:
    """The server copies stored envelope bytes into the batch instead of parsing and encoding
    them again: the result must be what protobuf itself would send."""
    from exchange.node.sync import encode_pull_batch

    envelopes = [
        records_pb2.Envelope(payload_type=RECORD_TYPE, payload=b"p" * size, key_id="JPN-NPA/k", signature=b"s" * 64)
        for size in (0, 1, 60, 127, 128, 300, 16_383, 16_384, 70_000)
    ]
    for entries, cursor in ((envelopes, b"c" * 60), (envelopes[:1], b""), ([], b"c" * 200), ([], b"")):
        expected = sync_pb2.PullResponse(entries=entries, cursor=cursor).SerializeToString()
        assert encode_pull_batch([e.SerializeToString() for e in entries], cursor) == expected
    assert encode_pull_batch([b""], b"") == sync_pb2.PullResponse(entries=[records_pb2.Envelope()]).SerializeToString()
