"""A hostile partner: JPN-NPA's real node pulls from a scripted server posing as KOR-KNPA.

Every case puts honest records in the same batch as the bad entry: the bad one is
refused (quarantined, with a security event) or handled by the version rules, the
honest ones are stored, the cursor moves batch by batch, and afterwards the node
still serves its liaison officer. docs/design.md "Sync" and "Who may see what".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exchange.config import Limits
from exchange.core.identity import Identity
from exchange.node.server import Node
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, content_hash
from exchange.store.current import current_record
from exchange.store.events import quarantined, security_events
from exchange.store.log import log_entries
from exchange.store.peers import peer_cursor
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft
from tests.hostile import (
    Abort,
    Batch,
    Endless,
    Forge,
    HostilePartner,
    Oversize,
    Stall,
    endless_cursor,
    fresh_id,
    hash_of,
    marking,
    record_of,
    ref_of,
    retyped,
    tampered,
)

KOR = "KOR-KNPA"
Ref = tuple[str, str]

# --- fixtures and helpers ----------------------------------------------------------------------




def start_jpn(federation: Federation, tmp_path: Path, limits: Limits | None = None) -> Node:
    return federation.start_node("JPN-NPA", tmp_path / "jpn", limits=limits)


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path) -> Node:
    return start_jpn(federation, tmp_path)


def log_rows(node: Node) -> list[Any]:
    with node.store.engine.connect() as conn:
        return list(conn.exec_driver_sql(
            "SELECT originator, record_id, version, content_hash, payload_type, envelope, purged FROM log"
        ).all())


def log_hashes(node: Node) -> set[bytes]:
    return {bytes(r.content_hash) for r in log_rows(node)}


def held(node: Node) -> dict[Ref, int]:
    with node.store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT originator, record_id, version FROM records").all()
    return {(o, r): v for o, r, v in rows}


def events(node: Node, kind: str) -> list[dict[str, Any]]:
    return [json.loads(e.detail) for e in security_events(node.store) if e.kind == kind]


def assert_stored(node: Node, *envelopes: records_pb2.Envelope) -> None:
    """Each envelope is its record's current version, held verbatim."""
    for envelope in envelopes:
        current = current_record(node.store, *ref_of(envelope))
        assert current is not None, f"{ref_of(envelope)} not stored"
        assert current.version == record_of(envelope).version
        assert records_pb2.Envelope.FromString(current.envelope) == envelope
        assert not current.equivocated


def assert_refused(node: Node, envelope: records_pb2.Envelope, kind: str, reason: str) -> None:
    """Refused on receipt: quarantined by hash with its reason, a security event, nothing in the log."""
    digest = hash_of(envelope)
    rows = [q for q in quarantined(node.store) if bytes(q.content_hash) == digest]
    assert len(rows) == 1, quarantined(node.store)
    assert rows[0].peer == KOR and reason in rows[0].reason, rows[0].reason
    assert [e for e in events(node, kind) if digest.hex() in e["content_hashes"]], security_events(node.store)
    assert digest not in log_hashes(node)
    assert all(envelope.payload not in bytes(r.envelope) for r in log_rows(node))


def liaison(federation: Federation, node: Node) -> UserClient:
    return UserClient.of(federation.user_channel(node, "JPN-NPA", "suzuki"))


def assert_serving(federation: Federation, node: Node, expected: set[Ref]) -> None:
    """The puller node still answers its liaison officer, who finds exactly the KOR records it should."""
    client = liaison(federation, node)
    try:
        found = client.query.Search(query_pb2.SearchRequest(originators=[KOR], page_size=500), timeout=10)
        refs = {ref_of(h.envelope) for h in found.records}
        assert refs == expected
        by_text = client.query.Search(query_pb2.SearchRequest(originators=[KOR], text="迂回調達", page_size=500),
                                      timeout=10)
        assert {ref_of(h.envelope) for h in by_text.records} == expected  # the text index was written too
        for originator, record_id in sorted(expected)[:3]:
            got = client.query.Get(query_pb2.GetRequest(
                ref=records_pb2.RecordRef(originator=originator, record_id=record_id)), timeout=10).record
            assert ref_of(got.envelope) == (originator, record_id) and got.received_from == KOR
    finally:
        client.channel.close()


def refs(*envelopes: records_pb2.Envelope) -> set[Ref]:
    return {ref_of(e) for e in envelopes}


# --- refused as invalid: bad signatures, forged identities, malformed entries ---------------------


@dataclass(frozen=True)
class Bad:
    make: Callable[[Forge], records_pb2.Envelope]
    reason: str  # part of the quarantine reason


def _foreign_key_own_id(forge: Forge) -> records_pb2.Envelope:
    # USA-DTSF's key over a KOR record, presented under KOR-KNPA's key id.
    return forge.seal(forge.record(), by="USA-DTSF", key_id=forge.signers[KOR].key_id)


def _signed_as_withdrawal(forge: Forge) -> records_pb2.Envelope:
    # A signature over PAE(withdrawal type, bytes) replayed as a record with the same bytes.
    return retyped(forge.seal(forge.record().SerializeToString(), payload_type=WITHDRAWAL_TYPE), RECORD_TYPE)


def _bad_record_id(forge: Forge) -> records_pb2.Envelope:
    return forge.honest(record_id=fresh_id().upper())


INVALID = {
    "tampered-payload-byte": Bad(lambda f: tampered(f.honest()), "bad signature on a record of KOR-KNPA"),
    "usa-key-usa-key-id": Bad(lambda f: f.seal(f.record(), by="USA-DTSF"),
                              "claims originator 'KOR-KNPA' but is signed by USA-DTSF"),
    "usa-key-kor-key-id": Bad(_foreign_key_own_id, "bad signature on a record of KOR-KNPA"),
    "unknown-kor-key-id": Bad(lambda f: f.seal(f.record(), key_id="KOR-KNPA/not-a-key"),
                              "is not a signing key of KOR-KNPA"),
    "payload-type-replay": Bad(_signed_as_withdrawal, "bad signature on a record of KOR-KNPA"),
    "kor-signed-jpn-originator": Bad(lambda f: f.honest(originator="JPN-NPA"),
                                     "claims originator 'JPN-NPA' but is signed by KOR-KNPA"),
    "version-zero": Bad(lambda f: f.honest(version=0), "record.version: out of range: 0"),
    "upper-case-record-id": Bad(_bad_record_id, "record.ref.record_id: record ids are lower-case"),
    "unknown-payload-type": Bad(lambda f: f.seal(f.record(), payload_type="application/x-evil"),
                                "unknown payload type"),
}


@pytest.mark.parametrize("case", INVALID.values(), ids=INVALID.keys())
def test_invalid_entry_is_refused_and_the_rest_of_its_batch_stored(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge, case: Bad
) -> None:
    before, after = forge.honest(), forge.honest()
    bad = case.make(forge)
    hostile.play([Batch([before, bad, after], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.received == 3
    assert report.applied.stored == 2 and report.applied.refused == 1
    assert report.applied.events == {"refused-invalid": 1}
    assert_refused(jpn, bad, "refused-invalid", case.reason)
    assert_stored(jpn, before, after)
    assert held(jpn) == {ref_of(before): 1, ref_of(after): 1}
    assert peer_cursor(jpn.store, KOR) == b"c1"
    assert_serving(federation, jpn, refs(before, after))


# --- another originator's record id ----------------------------------------------------------------


def test_a_partner_cannot_touch_a_record_of_another_originator_with_the_same_id(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge
) -> None:
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(title="迂回調達 JPN original", marking=marking("CONFIDENTIAL", ["KOR-KNPA"]))), timeout=10).receipt
    analyst.channel.close()
    jpn_id = receipt.ref.record_id
    original = current_record(jpn.store, "JPN-NPA", jpn_id)
    assert original is not None
    original_log = log_entries(jpn.store, "JPN-NPA", jpn_id)

    # (a) KOR signs a "version 2" of JPN's record: refused. (b) KOR's own record with JPN's id: a different record.
    spoof = forge.honest(originator="JPN-NPA", record_id=jpn_id, version=2)
    same_id = forge.honest(record_id=jpn_id)
    honest = forge.honest()
    hostile.play([Batch([honest, spoof, same_id], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.stored == 2 and report.applied.refused == 1
    assert_refused(jpn, spoof, "refused-invalid", "claims originator 'JPN-NPA' but is signed by KOR-KNPA")
    assert_stored(jpn, honest, same_id)

    # Then KOR revises and withdraws *its* record with that id: JPN's record is untouched throughout.
    same_id_v2 = forge.honest(record_id=jpn_id, version=2)
    withdraw_v1 = forge.withdrawal(records_pb2.RecordRef(originator=KOR, record_id=jpn_id), 2)
    hostile.play([Batch([same_id_v2, withdraw_v1, forge.honest(originator="JPN-NPA", record_id=jpn_id, version=3)],
                        b"c2")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.stored == 1 and report.applied.withdrawals == 1
    assert_stored(jpn, same_id_v2)

    after = current_record(jpn.store, "JPN-NPA", jpn_id)
    assert after is not None
    assert (after.version, after.envelope, after.title, after.received_from, after.equivocated) == (
        original.version, original.envelope, original.title, "JPN-NPA", False)
    assert log_entries(jpn.store, "JPN-NPA", jpn_id) == original_log  # same rows, same hash, not purged
    assert [bool(r.purged) for r in log_entries(jpn.store, KOR, jpn_id)] == [True, False, False]

    client = liaison(federation, jpn)
    try:
        mine = client.query.Get(query_pb2.GetRequest(ref=receipt.ref), timeout=10).record
        assert mine.envelope.SerializeToString() == original.envelope and mine.received_from == "JPN-NPA"
        theirs = client.query.Get(query_pb2.GetRequest(
            ref=records_pb2.RecordRef(originator=KOR, record_id=jpn_id)), timeout=10).record
        assert theirs.envelope == same_id_v2
    finally:
        client.channel.close()
    assert_serving(federation, jpn, refs(honest, same_id))


# --- versions: no rollback, equivocation --------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one-batch", "across-batches"])
def test_an_older_version_after_a_newer_one_never_rolls_back(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge, split: bool
) -> None:
    rid = fresh_id()
    v1, v2 = forge.honest(record_id=rid, version=1), forge.honest(record_id=rid, version=2)
    a, b = forge.honest(), forge.honest()
    if split:
        hostile.play([Batch([a, v2], b"c1"), Batch([v1, b], b"c2")])
    else:
        hostile.play([Batch([a, v2, v1, b], b"c2")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.refused == 0 and report.applied.equivocations == 0
    assert_stored(jpn, v2, a, b)
    assert peer_cursor(jpn.store, KOR) == b"c2"
    # A later, higher version still supersedes.
    v3 = forge.honest(record_id=rid, version=3)
    hostile.play([Batch([v1, v3], b"c3")])
    assert jpn.puller.pull(KOR).error == ""
    assert_stored(jpn, v3)
    assert_serving(federation, jpn, refs(a, b, v3))


EQUIVOCATION_SCRIPTS: dict[str, Callable[[records_pb2.Envelope, records_pb2.Envelope, records_pb2.Envelope,
                                          Forge], list[Batch]]] = {
    "pair-in-one-batch-after-v1": lambda v1, x, y, f: [Batch([v1, f.honest()], b"c1"),
                                                       Batch([f.honest(), x, y], b"c2")],
    "pair-across-batches": lambda v1, x, y, f: [Batch([v1, f.honest()], b"c1"), Batch([x, f.honest()], b"c2"),
                                                Batch([f.honest(), y], b"c3")],
    "v1-and-pair-in-one-batch": lambda v1, x, y, f: [Batch([f.honest(), v1, x, y, f.honest()], b"c1")],
}


@pytest.mark.parametrize("script", EQUIVOCATION_SCRIPTS.values(), ids=EQUIVOCATION_SCRIPTS.keys())
def test_equivocation_keeps_evidence_flags_and_shows_the_last_unequivocal_version(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge,
    script: Callable[..., list[Batch]],
) -> None:
    rid = fresh_id()
    v1 = forge.honest(record_id=rid, version=1)
    v2a, v2b = forge.honest(record_id=rid, version=2), forge.honest(record_id=rid, version=2)
    assert hash_of(v2a) != hash_of(v2b)
    batches = script(v1, v2a, v2b, forge)
    honest = [e for b in batches for e in b.entries if ref_of(e)[1] != rid]
    hostile.play(batches)
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.equivocations == 1 and report.applied.refused == 0
    assert_stored(jpn, *honest)

    # Both signed contents are kept verbatim as evidence.
    entries = log_entries(jpn.store, KOR, rid)
    v2_rows = [r for r in entries if r.version == 2]
    assert sorted(bytes(r.content_hash) for r in v2_rows) == sorted([hash_of(v2a), hash_of(v2b)])
    assert {records_pb2.Envelope.FromString(r.envelope).SerializeToString() for r in v2_rows} == {
        v2a.SerializeToString(), v2b.SerializeToString()}
    [event] = events(jpn, "equivocation")
    assert (event["originator"], event["record_id"], event["version"]) == (KOR, rid, 2)
    assert event["content_hashes"] == sorted([hash_of(v2a).hex(), hash_of(v2b).hex()])
    current = current_record(jpn.store, KOR, rid)
    assert current is not None and current.version == 1 and current.equivocated
    assert records_pb2.Envelope.FromString(current.envelope) == v1
    client = liaison(federation, jpn)
    try:
        shown = client.query.Get(query_pb2.GetRequest(ref=records_pb2.RecordRef(originator=KOR, record_id=rid)),
                                 timeout=10).record
        assert shown.equivocated and shown.envelope == v1
    finally:
        client.channel.close()

    # A higher version resolves it.
    v3 = forge.honest(record_id=rid, version=3)
    hostile.play([Batch([v3, forge.honest()], b"c9")])
    resolved = jpn.puller.pull(KOR)
    assert resolved.error == "" and resolved.applied.equivocations == 0
    assert_stored(jpn, v3)
    assert len(events(jpn, "equivocation")) == 1
    assert_serving(federation, jpn, held_kor(jpn))


def held_kor(node: Node) -> set[Ref]:
    return {ref for ref in held(node) if ref[0] == KOR}


# --- records this node may not hold -----------------------------------------------------------------


NOT_HOLDABLE = {
    "not-released-to-jpn": (marking("CONFIDENTIAL", ["USA-DTSF", "GBR-NPSA"]), "not releasable to JPN-NPA"),
    "above-accreditation": (marking("TOP SECRET", ["JPN-NPA", "USA-DTSF"]), "TOP SECRET above SECRET"),
}


@pytest.mark.parametrize(("mark", "reason"), NOT_HOLDABLE.values(), ids=NOT_HOLDABLE.keys())
def test_a_record_the_node_may_not_hold_leaves_only_its_hash_and_the_reason(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge,
    mark: records_pb2.Marking, reason: str,
) -> None:
    secret_word = f"NOTHOLDABLE{fresh_id().replace('-', '')}"
    bad = forge.honest(mark=mark, title=f"迂回調達 {secret_word}")
    before, after = forge.honest(), forge.honest()
    hostile.play([Batch([before, bad, after], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.stored == 2 and report.applied.refused == 1
    assert report.applied.events == {"refused-not-holdable": 1}
    assert_refused(jpn, bad, "refused-not-holdable", reason)
    [row] = quarantined(jpn.store)
    assert bytes(row.content_hash) == content_hash(bad.payload)
    [event] = events(jpn, "refused-not-holdable")
    assert set(event) == {"content_hashes", "count", "reason"}
    assert event["content_hashes"] == [content_hash(bad.payload).hex()] and event["count"] == 1
    assert_stored(jpn, before, after)
    # Nothing of the content was written anywhere: not its id, not its words.
    bad_id = ref_of(bad)[1]
    assert (KOR, bad_id) not in held(jpn) and not log_entries(jpn.store, KOR, bad_id)
    stored_bytes = federation.backend.stored_bytes(jpn.config.data_dir)
    assert ref_of(before)[1].encode() in stored_bytes  # the scan sees what was stored
    assert secret_word.encode() not in stored_bytes and bad_id.encode() not in stored_bytes
    assert_serving(federation, jpn, refs(before, after))


# --- the stream itself: oversize, endless, stalled, cut off -----------------------------------------


def test_an_oversize_message_ends_the_pull_and_keeps_what_came_before(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    jpn = start_jpn(federation, tmp_path, Limits(max_message_bytes=256 * 1024))
    first = forge.honest_many(2)
    inside = forge.honest_many(2)  # travel inside the oversize message: lost with it
    never = forge.honest()
    hostile.play([Batch(first, b"c1"), Oversize(jpn.puller.limits.max_message_bytes, inside), Batch([never], b"c3")])
    report = jpn.puller.pull(KOR)
    assert report.error.startswith("RESOURCE_EXHAUSTED"), report.error
    assert report.batches == 1 and report.applied.stored == 2
    assert_stored(jpn, *first)
    assert held_kor(jpn) == refs(*first)
    assert peer_cursor(jpn.store, KOR) == b"c1"
    assert hostile.wait_idle()
    # The next pull resumes after the last batch applied.
    later = forge.honest()
    hostile.play([Batch([later], b"c4")])
    assert jpn.puller.pull(KOR).error == ""
    assert hostile.calls[1].request.cursor == b"c1"
    assert_serving(federation, jpn, refs(*first, later))


def test_an_endless_stream_is_cut_at_pull_max_entries(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    jpn = start_jpn(federation, tmp_path, Limits(pull_batch_entries=5, pull_max_entries=20))
    started = time.monotonic()
    hostile.play([Endless(lambda n: [forge.honest() for _ in range(5)])])
    report = jpn.puller.pull(KOR)
    assert report.truncated and report.error == ""
    assert report.received == 20 and report.batches == 4 and report.applied.stored == 20
    assert hostile.wait_idle(5), "the hostile server is still streaming: the puller did not cancel the call"
    assert time.monotonic() - started < 10
    received = [e for batch in hostile.calls[0].sent[:4] for e in batch.entries]
    assert_stored(jpn, *received)
    assert held_kor(jpn) == refs(*received)
    assert peer_cursor(jpn.store, KOR) == endless_cursor(3)
    assert_serving(federation, jpn, refs(*received))


@pytest.mark.parametrize("tail", ["endless-empty-batches", "stall"])
def test_a_stream_that_never_ends_is_cut_by_the_deadline(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge, tail: str
) -> None:
    jpn = start_jpn(federation, tmp_path, Limits(pull_deadline_seconds=1))
    first = forge.honest_many(3)
    forever = Endless(lambda n: [], pause=0.01) if tail == "endless-empty-batches" else Stall(30)
    hostile.play([Batch(first, b"c1"), forever])
    started = time.monotonic()
    report = jpn.puller.pull(KOR)
    assert report.error.startswith("DEADLINE_EXCEEDED"), report.error
    assert time.monotonic() - started < 5
    assert report.applied.stored == 3
    assert_stored(jpn, *first)
    assert held_kor(jpn) == refs(*first)
    assert peer_cursor(jpn.store, KOR) == hostile.calls[0].sent[report.batches - 1].cursor
    assert hostile.wait_idle(5)
    assert_serving(federation, jpn, refs(*first))


@pytest.mark.parametrize("k", [0, 1, 3])
def test_a_stream_cut_after_k_batches_keeps_them_and_resumes_from_their_cursor(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge, k: int
) -> None:
    batches = [Batch([forge.honest(), tampered(forge.honest()), forge.honest()], b"cursor-%d" % i)
               for i in range(1, k + 1)]
    hostile.play([*batches, Abort(), Batch(forge.honest_many(2), b"never")])
    report = jpn.puller.pull(KOR)
    assert report.error.startswith("UNAVAILABLE"), report.error
    assert report.batches == k and report.applied.stored == 2 * k and report.applied.refused == k
    honest = [e for b in batches for i, e in enumerate(b.entries) if i != 1]
    assert_stored(jpn, *honest)
    # Nothing half-applied: exactly the k batches' honest records, their refusals, and batch k's cursor.
    assert len(log_rows(jpn)) == 2 * k and len(quarantined(jpn.store)) == k
    assert peer_cursor(jpn.store, KOR) == (batches[-1].cursor if batches else b"")

    tail = forge.honest_many(2)
    hostile.play([Batch(tail, b"after")])
    resumed = jpn.puller.pull(KOR)
    assert resumed.error == "" and resumed.applied.stored == 2 and resumed.applied.duplicates == 0
    assert [c.request.cursor for c in hostile.calls] == [b"", batches[-1].cursor if batches else b""]
    assert peer_cursor(jpn.store, KOR) == b"after"
    assert len(quarantined(jpn.store)) == k
    assert_serving(federation, jpn, refs(*honest, *tail))


# --- a server that is not KOR-KNPA's node ------------------------------------------------------------


def _usa_node_cert(federation: Federation) -> tuple[bytes, bytes]:
    base = federation.pki_dir / "USA-DTSF"
    return (base / "node.key").read_bytes(), (base / "node.crt").read_bytes()


IMPOSTOR_CERTS: dict[str, Callable[[Federation], tuple[bytes, bytes]]] = {
    "usa-node-cert": _usa_node_cert,
    "kor-ca-names-usa-node": lambda f: f.issue_cert("KOR-KNPA", Identity("USA-DTSF", None)),
    "usa-ca-names-kor-node": lambda f: f.issue_cert("USA-DTSF", Identity("KOR-KNPA", None)),
}


@pytest.mark.parametrize("make_cert", IMPOSTOR_CERTS.values(), ids=IMPOSTOR_CERTS.keys())
def test_a_server_without_kor_knpas_node_certificate_is_refused(
    federation: Federation, jpn: Node, forge: Forge, make_cert: Callable[[Federation], tuple[bytes, bytes]]
) -> None:
    key, cert = make_cert(federation)
    impostor = HostilePartner(federation, KOR, key_pem=key, cert_pem=cert).start()
    try:
        impostor.play([Batch(forge.honest_many(2), b"c1")])
        report = jpn.puller.pull(KOR)
        assert report.error.startswith("UNAVAILABLE"), report.error
        assert impostor.calls == []  # the handshake failed: no request was ever made
    finally:
        impostor.stop()
    assert log_rows(jpn) == [] and peer_cursor(jpn.store, KOR) == b"" and quarantined(jpn.store) == []
    assert_serving(federation, jpn, set())


def test_the_puller_presents_its_own_node_identity(jpn: Node, hostile: HostilePartner, forge: Forge) -> None:
    hostile.play([Batch([forge.honest()], b"c1")])
    assert jpn.puller.pull(KOR).error == ""
    assert b"urn:exchange:JPN-NPA:node" in hostile.calls[0].peer_identities


# --- validly signed by the originator, but not storable as sent ---------------------------------------


def _far_future(forge: Forge) -> list[Batch]:
    record = forge.record()
    record.issued_at.seconds = 10**15  # a valid int64, but not as microseconds
    return [Batch([forge.honest(), forge.seal(record), forge.honest()], b"c1")]


def _record_bytes_first_signed_as_withdrawal(forge: Forge) -> list[Batch]:
    # The originator signs the same bytes as a withdrawal (which parses: unknown fields are ignored)
    # and as a record: the log already holds (originator, record_id, version, content hash).
    payload = forge.record().SerializeToString()
    return [Batch([forge.honest(), forge.seal(payload, payload_type=WITHDRAWAL_TYPE)], b"c1"),
            Batch([forge.honest(), forge.seal(payload), forge.honest()], b"c2")]


UNSTORABLE: dict[str, Callable[[Forge], list[Batch]]] = {
    "issued-at-beyond-int64-microseconds": _far_future,
    "record-bytes-already-logged-as-withdrawal": _record_bytes_first_signed_as_withdrawal,
}


@pytest.mark.parametrize("script", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_a_signed_entry_that_cannot_be_stored_does_not_block_its_batch(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge, script: Callable[[Forge], list[Batch]]
) -> None:
    """docs/design.md "Schedule": a bad record never blocks the rest of a batch (it is quarantined)."""
    batches = script(forge)
    bad = batches[-1].entries[1]
    honest = [e for b in batches for e in b.entries if e.payload_type == RECORD_TYPE and e is not bad]
    hostile.play(batches)
    report = jpn.puller.pull(KOR)  # must report, not raise
    assert report.error == "" and report.batches == len(batches)
    assert_stored(jpn, *honest)
    assert peer_cursor(jpn.store, KOR) == batches[-1].cursor
    # The bad entry is either refused with its reason or held; it never takes its batch down with it.
    assert report.applied.refused == 1 or ref_of(bad) in held(jpn)
    assert_serving(federation, jpn, held_kor(jpn))


def test_the_pull_schedule_survives_a_batch_that_cannot_be_stored(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    """One hostile batch must not stop the node pulling (from this peer and every other)."""
    hostile.play(*[_far_future(forge) for _ in range(5)])
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", peers=(KOR,), schedule=True, interval=0.2)
    deadline = time.monotonic() + 5
    while len(hostile.calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jpn.schedule is not None
    assert len(hostile.calls) >= 3, f"the schedule stopped after {len(hostile.calls)} pull(s)"



def test_a_stalling_partner_delays_only_its_own_pulls(
    federation: Federation, tmp_path: Path, hostile: HostilePartner
) -> None:
    """Review finding: one schedule thread let a stalling peer hold up every other peer."""
    hostile.play(*([[Stall(30)]] * 5))  # KOR-KNPA keeps every pull open until its deadline
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    jpn = federation.start_node(
        "JPN-NPA", tmp_path / "jpn", limits=Limits(pull_deadline_seconds=20), peers=(KOR, "USA-DTSF"),
        schedule=True, interval=0.2,
    )
    from exchange.v1 import submission_pb2
    from tests.federation import draft

    deadline = time.monotonic() + 5
    while not hostile.calls:  # KOR-KNPA's pull has started and is stalled...
        assert time.monotonic() < deadline, "the schedule never pulled KOR-KNPA"
        time.sleep(0.02)
    assert jpn.schedule is not None
    deadline = time.monotonic() + 10
    while "USA-DTSF" not in jpn.schedule.last:  # ...and USA-DTSF's first pull has come and gone
        assert time.monotonic() < deadline, "the schedule never finished a pull from USA-DTSF"
        time.sleep(0.02)
    writer = UserClient.of(federation.user_channel(usa, "USA-DTSF", "jmiller"))
    marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["JPN-NPA"], tlp="GREEN")
    ref = writer.submission.Submit(submission_pb2.SubmitRequest(draft=draft(marking=marking)), timeout=10).receipt.ref
    deadline = time.monotonic() + 8
    while ("USA-DTSF", ref.record_id) not in held(jpn):
        assert time.monotonic() < deadline, "USA-DTSF's record waited behind the stalled KOR-KNPA pull"
        time.sleep(0.05)
    assert hostile.calls and not hostile.calls[0].ended.is_set()  # KOR-KNPA's pull is still stalled


def test_a_refused_record_shows_up_in_exchange_events(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge,
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from exchange.cli.main import main

    bad = tampered(forge.honest())
    not_ours = forge.honest(mark=marking(releasable_to=("USA-DTSF",)))
    hostile.play([Batch([forge.honest(), bad, not_ours], b"c1")])
    assert jpn.puller.pull(KOR).applied.refused == 2
    config = tmp_path / "jpn.toml"
    config.write_text(
        f'agency = "JPN-NPA"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{jpn.config.data_dir}"\n{federation.backend.config_line(jpn.config.data_dir)}',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["events", "--config", str(config), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(e["kind"], e["peer"], e["detail"]["content_hashes"], e["detail"]["count"]) for e in shown] == [
        ("refused-invalid", KOR, [hash_of(bad).hex()], 1),
        ("refused-not-holdable", KOR, [hash_of(not_ours).hex()], 1),
    ]


def _flip_last_payload_byte(envelope: records_pb2.Envelope) -> records_pb2.Envelope:
    copy = records_pb2.Envelope()
    copy.CopyFrom(envelope)
    copy.payload = copy.payload[:-1] + bytes([copy.payload[-1] ^ 0x01])
    return copy


@pytest.mark.parametrize("how", ["claims-another-originator", "foreign-key-under-originator-key-id", "tampered"])
def test_a_forged_withdrawal_never_purges_a_record(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge, how: str
) -> None:
    """Withdrawals purge content, so they are checked like records: only the originator's key counts."""
    kor_record = forge.honest()
    hostile.play([Batch([kor_record], b"c1")])
    assert jpn.puller.pull(KOR).applied.stored == 1
    analyst = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(title="JPN's own", marking=marking("CONFIDENTIAL", ["KOR-KNPA"]))), timeout=10).receipt
    analyst.channel.close()
    jpn_ref, kor_ref = receipt.ref, record_of(kor_record).ref
    forged = {
        # KOR-KNPA signs a withdrawal of JPN-NPA's record.
        "claims-another-originator": lambda: forge.withdrawal(jpn_ref, 2),
        # USA-DTSF's key, presented under KOR-KNPA's key id, withdrawing KOR-KNPA's record.
        "foreign-key-under-originator-key-id": lambda: forge.seal(
            records_pb2.Withdrawal(ref=kor_ref, version=2).SerializeToString(), by="USA-DTSF",
            key_id=forge.withdrawal(kor_ref, 2).key_id, payload_type=WITHDRAWAL_TYPE),
        "tampered": lambda: _flip_last_payload_byte(forge.withdrawal(kor_ref, 2)),  # version 2 -> 3
    }[how]()
    hostile.play([Batch([forged, forge.honest()], b"c2")])
    report = jpn.puller.pull(KOR)
    assert report.applied.refused == 1 and report.applied.withdrawals == 0 and report.applied.stored == 1
    assert events(jpn, "refused-invalid")
    for ref in (jpn_ref, kor_ref):  # both records still held, payloads intact
        assert current_record(jpn.store, ref.originator, ref.record_id) is not None
        assert all(not row.purged for row in log_entries(jpn.store, ref.originator, ref.record_id))


def test_a_puller_told_to_stop_applies_the_batch_it_holds_and_the_next_pull_resumes_there(
    federation: Federation, jpn: Node, hostile: HostilePartner, forge: Forge
) -> None:
    """A replica that loses the schedule's election stops at the next batch boundary
    (Puller.may_continue, set by the schedule): what it received is applied with its cursor,
    and whoever pulls next starts from that cursor, so two replicas overlap by a batch at most."""
    batches = [forge.honest_many(3) for _ in range(5)]
    hostile.play([Batch(b, f"c{i}".encode()) for i, b in enumerate(batches, start=1)])
    asked = 0

    def leading() -> bool:
        nonlocal asked
        asked += 1
        return asked < 2  # demoted after the second batch arrives

    jpn.puller.may_continue = leading
    first = jpn.puller.pull(KOR)
    assert first.error == "" and first.truncated and first.batches == 2 and first.applied.stored == 6
    assert_stored(jpn, *batches[0], *batches[1])
    assert (KOR, ref_of(batches[2][0])[1]) not in held(jpn)

    jpn.puller.may_continue = lambda: True
    hostile.play([Batch(b, f"c{i}".encode()) for i, b in enumerate(batches[2:], start=3)])
    second = jpn.puller.pull(KOR)
    assert hostile.calls[-1].request.cursor == b"c2"  # resumed where the demoted pull stopped
    assert second.error == "" and second.applied.stored == 9 and second.applied.duplicates == 0
    assert_stored(jpn, *[e for b in batches for e in b])
