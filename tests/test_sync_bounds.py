"""What a hostile partner can make a node keep or do is bounded (issue 10, items 4 and 6).

JPN-NPA's real node pulls from a scripted server posing as KOR-KNPA over mutual TLS
with KOR-KNPA's legitimately issued node certificate (``tests.hostile``):

- received records meet this node's own submission rules and limits;
- a record whose marking forbids relay, served by a node other than its originator,
  is refused with a security event naming the relay;
- a flood of bad entries leaves a bounded number of events and quarantine rows, and
  the honest entries of the same batches are stored;
- equivocation evidence is capped per version;
- a digest naming invented originators is ignored; a repair is rate-limited.

The repair bomb measured on a node's memory is in ``test_sync_repair_bomb.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from exchange.config import Limits
from exchange.node.server import Node
from exchange.records.envelope import RECORD_TYPE
from exchange.store.current import current_record
from exchange.store.events import quarantined, security_events
from exchange.store.log import log_entries
from exchange.store.peers import peer_cursor
from exchange.v1 import records_pb2, sync_pb2
from tests.federation import Federation
from tests.hostile import Abort, Batch, Forge, HostilePartner, hash_of, marking, ref_of

KOR = "KOR-KNPA"




def start_jpn(federation: Federation, tmp_path: Path, **limits: int) -> Node:
    return federation.start_node("JPN-NPA", tmp_path / "jpn", limits=Limits(**limits))


def events(node: Node, kind: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.kind, e.peer, json.loads(e.detail)) for e in security_events(node.store)
            if kind is None or e.kind == kind]


def stored(node: Node, *envelopes: records_pb2.Envelope) -> bool:
    return all(current_record(node.store, *ref_of(e)) is not None for e in envelopes)


def held(node: Node, envelope: records_pb2.Envelope) -> bool:
    return current_record(node.store, *ref_of(envelope)) is not None


# --- received records meet local rules ---------------------------------------------------------


@pytest.mark.parametrize(("tlp", "caveats"), [("GREEN", ["ORCON"]), ("RED", []), ("AMBER+STRICT", [])],
                         ids=["orcon", "tlp-red", "tlp-amber-strict"])
def test_a_relayed_record_whose_marking_forbids_relay_is_refused_naming_the_relay(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge, tlp: str, caveats: list[str]
) -> None:
    jpn = start_jpn(federation, tmp_path)
    usa = Forge(federation, "USA-DTSF")  # USA-DTSF's own, validly signed record, served by KOR-KNPA
    mark = marking("CONFIDENTIAL", ["JPN-NPA", "KOR-KNPA"], tlp=tlp, caveats=caveats)
    relayed = usa.honest(mark=mark)
    relay_allowed = usa.honest(mark=marking("CONFIDENTIAL", ["JPN-NPA", "KOR-KNPA"]))
    own = forge.honest(mark=mark)  # KOR-KNPA's own record with the same marking: not a relay
    hostile.play([Batch([relayed, relay_allowed, own], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.refused == 1 and report.applied.stored == 2
    assert report.applied.events == {"refused-relayed": 1}
    assert not held(jpn, relayed) and stored(jpn, relay_allowed, own)
    [(kind, peer, detail)] = events(jpn)
    assert (kind, peer, detail["relay"], detail["count"]) == ("refused-relayed", KOR, KOR, 1)
    assert detail["content_hashes"] == [hash_of(relayed).hex()]
    assert "relayed by KOR-KNPA" in detail["reason"] and "forbids relay" in detail["reason"]


def _with_observables(forge: Forge, count: int) -> records_pb2.Envelope:
    record = forge.record()
    del record.content.observables[:]
    record.content.observables.extend(
        records_pb2.Observable(type="email", value=f"agent{i}@front.example") for i in range(count))
    return forge.seal(record)


def _with_related(forge: Forge, count: int) -> records_pb2.Envelope:
    record = forge.record()
    record.content.related.extend(
        records_pb2.RecordRef(originator=KOR, record_id=ref_of(forge.honest())[1]) for _ in range(count))
    return forge.seal(record)


def _with_title(forge: Forge, title: str) -> records_pb2.Envelope:
    return forge.honest(title=title)


def test_a_received_record_over_a_local_limit_is_refused(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    jpn = start_jpn(federation, tmp_path, max_observables=20, max_related=3, max_record_bytes=8 * 1024)
    at_limits = [_with_observables(forge, 20), _with_related(forge, 3)]
    over = {
        "record.content.observables: 21 observables, over the limit of 20": _with_observables(forge, 21),
        "record.content.related: 4 links, over the limit of 3": _with_related(forge, 4),
        "over the limit of 8192": _big(forge),
        "record.content.title: contains control characters": _with_title(forge, "bad\x07title"),
        "record.content.observables[0]": _bad_observable(forge),
    }
    hostile.play([Batch([*at_limits, *over.values()], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.stored == 2 and report.applied.refused == len(over)
    assert stored(jpn, *at_limits)
    reasons = {bytes(q.content_hash): q.reason for q in quarantined(jpn.store)}
    for expected, envelope in over.items():
        assert not held(jpn, envelope)
        assert expected in reasons[hash_of(envelope)], reasons[hash_of(envelope)]
    assert {kind for kind, _, _ in events(jpn)} == {"refused-invalid"}


def _big(forge: Forge) -> records_pb2.Envelope:
    record = forge.record()
    record.content.summary = "迂回" * 4000  # 24,000 bytes of UTF-8, within the summary's character limit
    return forge.seal(record)


def _bad_observable(forge: Forge) -> records_pb2.Envelope:
    record = forge.record()
    record.content.observables[0].type = "not-a-type"
    return forge.seal(record)


def test_a_received_record_with_max_observables_plus_one_is_refused_at_default_limits(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    """The issue's case: 10,001 observables where a submission allows 10,000 (the record
    stays under max_record_bytes, so the observable limit is what refuses it)."""
    jpn = start_jpn(federation, tmp_path, max_record_bytes=1024 * 1024)
    limit = jpn.config.limits.max_observables
    record = forge.record()
    del record.content.observables[:]
    record.content.observables.extend(
        records_pb2.Observable(type="hs_code", value=f"{8400 + i // 100:04d}.{i % 100:02d}") for i in range(limit + 1))
    over = forge.seal(record)
    honest = forge.honest()
    hostile.play([Batch([over, honest], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.refused == 1 and stored(jpn, honest) and not held(jpn, over)
    [row] = quarantined(jpn.store)
    assert f"{limit + 1} observables, over the limit of {limit}" in row.reason


# --- a flood of bad entries ---------------------------------------------------------------------


def _bad_signatures(forge: Forge, count: int) -> Iterator[records_pb2.Envelope]:
    """``count`` distinct records of KOR-KNPA under wrong signature bytes (cheap: nothing is signed)."""
    template = forge.record()
    key_id = forge.signers[KOR].key_id
    for i in range(count):
        template.content.title = f"flood {i}"
        yield records_pb2.Envelope(payload_type=RECORD_TYPE, payload=template.SerializeToString(),
                                   key_id=key_id, signature=i.to_bytes(64, "big"))


FLOOD = 100_000
HONEST_PER_BATCH = 5
BAD_PER_BATCH = 495


def test_a_flood_of_bad_entries_leaves_bounded_events_and_rows_and_the_honest_ones_stored(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    jpn = start_jpn(federation, tmp_path)
    limits = jpn.config.limits
    bad = _bad_signatures(forge, FLOOD)
    batches, honest = [], []
    for n in range(FLOOD // BAD_PER_BATCH + 1):
        good = forge.honest_many(HONEST_PER_BATCH)
        honest += good
        entries = [*good[:2], *(e for _, e in zip(range(BAD_PER_BATCH), bad, strict=False)), *good[2:]]
        batches.append(Batch(entries, b"c%d" % n))
    assert sum(len(b.entries) for b in batches) - len(honest) == FLOOD
    hostile.play(batches)
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.refused == FLOOD and report.applied.stored == len(honest)
    assert stored(jpn, *honest)
    # One event for the one reason, with the count and the first hashes; bounded quarantine.
    [(kind, peer, detail)] = events(jpn)
    assert (kind, peer, detail["count"]) == ("refused-invalid", KOR, FLOOD)
    assert "bad signature on a record of KOR-KNPA" in detail["reason"]
    first = [hash_of(e).hex() for e in batches[0].entries[2:2 + limits.refusal_hashes_per_event]]
    assert detail["content_hashes"] == first
    assert len(quarantined(jpn.store)) == limits.max_quarantine_per_peer
    assert peer_cursor(jpn.store, KOR) == batches[-1].cursor


def test_quarantine_keeps_a_partners_newest_rows_and_events_stay_one_per_reason_per_pull(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    jpn = start_jpn(federation, tmp_path, max_quarantine_per_peer=10, refusal_hashes_per_event=2,
                    max_refusal_reasons_per_pull=3)
    first_pull = list(_bad_signatures(forge, 8))
    hostile.play([Batch(first_pull[:4], b"c1"), Batch(first_pull[4:], b"c2")])
    assert jpn.puller.pull(KOR).applied.refused == 8
    # The next pull: 6 more bad signatures, then 5 distinct reasons (wrong versions) past the limit of 3.
    second_pull = [*_bad_signatures(forge, 14)][8:]
    versions = [forge.honest(version=0), forge.honest(record_id="NOT-A-UUID"), forge.honest(originator="JPN-NPA"),
                forge.seal(forge.record(), payload_type="application/x-evil"),
                forge.seal(forge.record(), key_id="KOR-KNPA/not-a-key")]
    hostile.play([Batch([*second_pull, *versions], b"c3")])
    assert jpn.puller.pull(KOR).applied.refused == 11
    # 19 refused: a pull writes at most 10 rows (the second pull's 11th is counted only), and
    # the partner keeps its 10 newest rows: the first pull's are gone.
    rows = quarantined(jpn.store)
    assert [bytes(r.content_hash) for r in rows] == [hash_of(e) for e in [*second_pull, *versions][:10]]
    shown = events(jpn)
    # The first pull: one event. The second: its first 3 reasons, then one for "other reasons".
    assert len(shown) == 1 + 3 + 1, shown
    counts = [(kind, detail["count"], len(detail["content_hashes"])) for kind, _, detail in shown]
    assert counts[0] == ("refused-invalid", 8, 2)
    assert counts[1] == ("refused-invalid", 6, 2)  # the same reason in another pull: a new event
    assert counts[2][1] == counts[3][1] == 1
    assert shown[4][2]["reason"] == "other reasons (over the limit of distinct reasons in one pull)"
    assert shown[4][2]["count"] == 3 and len(shown[4][2]["content_hashes"]) == 2


def test_equivocation_evidence_is_capped_per_version(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    jpn = start_jpn(federation, tmp_path)
    cap = jpn.config.limits.max_equivocation_envelopes
    rid = ref_of(forge.honest())[1]
    contents = [forge.honest(record_id=rid, version=1, title=f"迂回調達 {i}") for i in range(cap + 20)]
    honest = forge.honest_many(2)
    hostile.play([Batch([contents[0], honest[0]], b"c1"), Batch([*contents[1:], honest[1]], b"c2")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and stored(jpn, *honest)
    kept = [r for r in log_entries(jpn.store, KOR, rid) if r.version == 1]
    assert sorted(bytes(r.content_hash) for r in kept) == sorted(hash_of(e) for e in contents[:cap])
    assert report.applied.equivocations == cap - 1 and report.applied.refused == 20
    assert len(events(jpn, "equivocation")) == cap - 1
    [(_, _, excess)] = events(jpn, "refused-excess-evidence")
    assert excess["count"] == 20 and f"already has {cap} signed contents" in excess["reason"]



def test_equivocation_events_of_one_pull_are_bounded(
    federation: Federation, tmp_path: Path, hostile: HostilePartner, forge: Forge
) -> None:
    """An originator can equivocate on any number of its own records: past the limit of a
    pull, the rest are counted in one more event."""
    jpn = start_jpn(federation, tmp_path, max_refusal_reasons_per_pull=3)
    pairs = [(forge.honest(record_id=rid, title="迂回調達 a"), forge.honest(record_id=rid, title="迂回調達 b"))
             for rid in (ref_of(forge.honest())[1] for _ in range(10))]
    hostile.play([Batch([e for pair in pairs for e in pair], b"c1")])
    report = jpn.puller.pull(KOR)
    assert report.error == "" and report.applied.equivocations == 10
    shown = events(jpn, "equivocation")
    assert [d["record_id"] for _, _, d in shown[:3]] == [ref_of(a)[1] for a, _ in pairs[:3]]
    assert len(shown) == 4 and shown[3][2]["count"] == 7
    assert shown[3][2]["content_hashes"] == [hash_of(b).hex() for _, b in pairs[3:8]]


# --- repair: invented originators, off-bucket listings, rate limit ------------------------------


def _flat_digest(originators: list[str], count: int) -> sync_pb2.DigestResponse:
    return sync_pb2.DigestResponse(
        summaries=[sync_pb2.DigestSummary(originator=o, bucket_prefix="", count=count, hash=b"\x01" * 32)
                   for o in originators],
        cursor=b"digest-cursor")


def test_a_digest_naming_invented_originators_is_ignored_with_one_event(
    federation: Federation, tmp_path: Path, hostile: HostilePartner
) -> None:
    jpn = start_jpn(federation, tmp_path)
    invented = [f"XX{i:05d}-EVIL" for i in range(5_000)]
    hostile.digest = lambda request: _flat_digest(invented, 10**9)
    hostile.play([Abort(grpc.StatusCode.FAILED_PRECONDITION, "stale")])
    report = jpn.puller.pull(KOR)
    assert report.stale_cursor and report.repaired and report.error == "", report
    assert [(d.originator, d.list_entries) for d in hostile.digests] == [("", False)]  # nothing bisected
    [(kind, peer, detail)] = events(jpn)
    assert (kind, peer, detail["count"]) == ("digest-refused", KOR, len(invented))
    assert len(detail["originators"]) == jpn.config.limits.refusal_hashes_per_event
    assert peer_cursor(jpn.store, KOR) == b"digest-cursor"


def test_a_listing_over_the_cap_or_off_its_bucket_ends_the_repair(
    federation: Federation, tmp_path: Path, hostile: HostilePartner
) -> None:
    jpn = start_jpn(federation, tmp_path, max_digest_entries=50, repair_interval_seconds=1)
    listing: list[sync_pb2.DigestEntry] = []

    def answer(request: sync_pb2.DigestRequest) -> sync_pb2.DigestResponse:
        if not request.originator:
            return _flat_digest([KOR], 100)
        if not request.list_entries:  # every bucket differs and is small: list it
            return sync_pb2.DigestResponse(summaries=[
                sync_pb2.DigestSummary(originator=KOR, bucket_prefix=request.bucket_prefix + c, count=10,
                                       hash=b"\x02" * 32) for c in "0123456789abcdef"])
        return sync_pb2.DigestResponse(entries=listing)

    hostile.digest = answer
    listing[:] = [sync_pb2.DigestEntry(originator=KOR, record_id=f"00000000-0000-4000-8000-{i:012d}", version=1,
                                       content_hash=b"\x03" * 32) for i in range(51)]
    hostile.play([Abort(grpc.StatusCode.FAILED_PRECONDITION, "stale")])
    report = jpn.puller.pull(KOR)
    assert report.error == "repair failed: KOR-KNPA listed 51 entries of KOR-KNPA/0, over the limit of 50"
    assert peer_cursor(jpn.store, KOR) == b""

    # Within the rate limit the next stale cursor is not repaired at all.
    hostile.play([Abort(grpc.StatusCode.FAILED_PRECONDITION, "stale")])
    digests = len(hostile.digests)
    postponed = jpn.puller.pull(KOR)
    assert postponed.error.startswith("repair postponed: the last repair from KOR-KNPA was"), postponed.error
    assert len(hostile.digests) == digests


def test_a_listing_naming_another_originator_ends_the_repair(
    federation: Federation, tmp_path: Path, hostile: HostilePartner
) -> None:
    jpn = start_jpn(federation, tmp_path)

    def answer(request: sync_pb2.DigestRequest) -> sync_pb2.DigestResponse:
        if not request.originator:
            return _flat_digest([KOR], 1)
        if not request.list_entries:
            return sync_pb2.DigestResponse(summaries=[
                sync_pb2.DigestSummary(originator=KOR, bucket_prefix="a", count=1, hash=b"\x02" * 32)])
        return sync_pb2.DigestResponse(entries=[sync_pb2.DigestEntry(
            originator="JPN-NPA", record_id="a0000000-0000-4000-8000-000000000000", version=1,
            content_hash=b"\x03" * 32)])

    hostile.digest = answer
    hostile.play([Abort(grpc.StatusCode.FAILED_PRECONDITION, "stale")])
    report = jpn.puller.pull(KOR)
    assert report.error.startswith("repair failed: KOR-KNPA listed JPN-NPA/"), report.error
    assert not [c for c in hostile.calls if c.request.only]  # nothing was asked for


def test_a_digest_listing_is_answered_within_max_digest_entries(federation: Federation, tmp_path: Path) -> None:
    """The serving side keeps the bound the puller enforces: a listing over it is refused (bisect further)."""
    from tests.fill import fill
    from tests.test_sync_serving import _partner

    jpn = start_jpn(federation, tmp_path, max_digest_entries=5)
    fill(jpn.store, federation.manifest, federation.pki_dir, "JPN-NPA", 12)
    usa = _partner(federation, jpn, "USA-DTSF")
    with pytest.raises(grpc.RpcError) as refused:
        usa.Digest(sync_pb2.DigestRequest(originator="JPN-NPA", list_entries=True), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bucket holds over 5 entries; bisect further" in (refused.value.details() or "")
    summaries = usa.Digest(sync_pb2.DigestRequest(originator="JPN-NPA"), timeout=10).summaries
    small = next(s for s in summaries if s.count <= 5)
    listing = usa.Digest(sync_pb2.DigestRequest(originator="JPN-NPA", bucket_prefix=small.bucket_prefix,
                                                list_entries=True), timeout=10)
    assert len(listing.entries) == small.count
