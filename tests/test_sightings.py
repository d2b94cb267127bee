"""Sightings on real nodes: feedback reaches the originator and no one else; forgeries are refused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.main import main
from exchange.config import Limits
from exchange.core.identity import Principal, Role
from exchange.core.marking import Marking
from exchange.core.policy import Decision, decide, sighting_acceptable, sighting_releasable
from exchange.node.server import Node
from exchange.records.envelope import SIGHTING_TYPE
from exchange.store import sightings as stored
from exchange.store.events import security_events
from exchange.v1 import liaison_pb2, liaison_pb2_grpc, query_pb2, records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft
from tests.hostile import Forge, HostilePartner
from tests.markings import KNOWN, agencies, markings, principals


def _liaison(federation: Federation, node: Node, handle: str) -> liaison_pb2_grpc.LiaisonServiceStub:
    return liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(node, node.config.agency, handle))


def _submit(federation: Federation, node: Node, handle: str, releasable_to: list[str], tlp: str = "AMBER"
            ) -> records_pb2.RecordRef:
    user = UserClient.of(federation.user_channel(node, node.config.agency, handle))
    marking = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=releasable_to, tlp=tlp)
    request = submission_pb2.SubmitRequest(draft=draft(marking=marking))
    return user.submission.Submit(request, timeout=10).receipt.ref


def _report(stub: liaison_pb2_grpc.LiaisonServiceStub, ref: records_pb2.RecordRef, verdict: int, note: str = "",
            releasable_to: tuple[str, ...] = ()) -> records_pb2.Sighting:
    request = liaison_pb2.ReportSightingRequest(ref=ref, verdict=verdict, note=note,  # type: ignore[arg-type]
                                                releasable_to=list(releasable_to))
    return stub.ReportSighting(request, timeout=10).sighting


def _held(node: Node, ref: records_pb2.RecordRef) -> list[records_pb2.Sighting]:
    return [records_pb2.Sighting.FromString(records_pb2.Envelope.FromString(s.envelope).payload)
            for s in stored.sightings_on(node.store, ref.originator, ref.record_id)]


def test_a_sighting_reaches_the_originator_and_no_third_party(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    kor = federation.start_node("KOR-KNPA", tmp_path / "kor")
    ref = _submit(federation, jpn, "sato", ["USA-DTSF", "KOR-KNPA"])
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    assert kor.puller.pull("JPN-NPA").applied.stored == 1
    jmiller = _liaison(federation, usa, "jmiller")  # an analyst reports
    seen = _report(jmiller, ref, records_pb2.VERDICT_SEEN, "same front company in a US case")
    assert (seen.reporter, seen.reported_by, seen.record_version) == ("USA-DTSF", "jmiller", 1)

    # KOR-KNPA holds the record too, and pulls from USA-DTSF: it gets nothing.
    kor.puller.pull("USA-DTSF")
    assert _held(kor, ref) == []
    # The originator gets it, with who reported it (and USA-DTSF's report that KOR-KNPA's
    # pull just now received the record through it: a relay report, see the last test).
    report = jpn.puller.pull("USA-DTSF")
    assert report.error == "" and report.sightings == 2
    sato = _liaison(federation, jpn, "sato")
    shown = list(sato.Sightings(liaison_pb2.SightingsRequest(ref=ref), timeout=10).sightings)
    assert [(s.reporter, s.reported_by, s.verdict, s.note) for s in shown] == [
        ("USA-DTSF", "jmiller", records_pb2.VERDICT_SEEN, "same front company in a US case")]
    # Pulled again: nothing new, nothing twice.
    assert jpn.puller.pull("USA-DTSF").sightings == 0 and len(_held(jpn, ref)) == 1

    # Counts per record in the originator's search results.
    rchen = _liaison(federation, usa, "rchen")
    _report(rchen, ref, records_pb2.VERDICT_FALSE_POSITIVE, "the address is a registered agent")
    _report(rchen, ref, records_pb2.VERDICT_CONFIRMED, releasable_to=("KOR-KNPA",))  # released wider
    jpn.puller.pull("USA-DTSF")
    user = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    found = user.query.Search(query_pb2.SearchRequest(), timeout=10).records
    counts = next(r.sightings for r in found if records_pb2.Record.FromString(r.envelope.payload).ref == ref)
    assert (counts.seen, counts.confirmed, counts.false_positive) == (1, 1, 1)
    # A search's records are sent as stored (exchange/node/reads.held_records_wire); Get builds
    # the same record as a message: the two agree, counts included.
    searched = next(r for r in found if records_pb2.Record.FromString(r.envelope.payload).ref == ref)
    assert user.query.Get(query_pb2.GetRequest(ref=ref), timeout=10).record == searched
    # The one released wider reaches KOR-KNPA (which holds the record); the others do not.
    kor.puller.pull("USA-DTSF")
    assert [s.verdict for s in _held(kor, ref)] == [records_pb2.VERDICT_CONFIRMED]
    # A partner's user sees what its node holds; GBR-NPSA's node, never addressed, has nothing to pull.
    assert [s.verdict for s in _liaison(federation, kor, "parksy").Sightings(
        liaison_pb2.SightingsRequest(ref=ref), timeout=10).sightings] == [records_pb2.VERDICT_CONFIRMED]
    gbr_channel = federation.node_channel(usa, "GBR-NPSA")
    stub = sync_pb2_grpc.SyncServiceStub(gbr_channel)  # type: ignore[no-untyped-call]
    answer = stub.PullSightings(sync_pb2.PullSightingsRequest(), timeout=10)
    assert list(answer.entries) == []


def test_reporting_needs_a_partners_record_the_caller_may_see(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    ref = _submit(federation, jpn, "sato", ["USA-DTSF"])
    sato = _liaison(federation, jpn, "sato")
    with pytest.raises(grpc.RpcError) as own:
        _report(sato, ref, records_pb2.VERDICT_SEEN)
    assert own.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    rchen = _liaison(federation, usa, "rchen")
    with pytest.raises(grpc.RpcError) as absent:  # not pulled yet: not there
        _report(rchen, ref, records_pb2.VERDICT_SEEN)
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND
    usa.puller.pull("JPN-NPA")
    with pytest.raises(grpc.RpcError) as verdict:
        _report(rchen, ref, records_pb2.VERDICT_RELAYED)  # only nodes report relays
    assert verdict.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _sighting(reporter: str, ref: records_pb2.RecordRef, verdict: int = records_pb2.VERDICT_SEEN
              ) -> records_pb2.Sighting:
    now = Timestamp()
    now.GetCurrentTime()
    return records_pb2.Sighting(sighting_id=str(uuid.uuid4()), reporter=reporter, ref=ref, record_version=1,
                                verdict=verdict, reported_at=now, observed_at=now)  # type: ignore[arg-type]


def test_forged_sightings_are_refused_with_a_security_event(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    holdable = _submit(federation, jpn, "sato", ["USA-DTSF", "KOR-KNPA"])
    not_for_kor = _submit(federation, jpn, "sato", ["USA-DTSF"])
    forge = Forge(federation, "KOR-KNPA")
    hostile = HostilePartner(federation, "KOR-KNPA").start()
    try:
        def seal(sighting: records_pb2.Sighting, by: str) -> records_pb2.Envelope:
            return forge.seal(sighting.SerializeToString(), by=by, payload_type=SIGHTING_TYPE)

        honest = seal(_sighting("KOR-KNPA", holdable), "KOR-KNPA")
        wrong_key = seal(_sighting("KOR-KNPA", holdable), "GBR-NPSA")
        wrong_key.key_id = honest.key_id  # names KOR-KNPA's key, signed by another
        claims_other = seal(_sighting("KOR-KNPA", holdable), "GBR-NPSA")  # GBR's node claiming to be KOR
        relayed_usa = seal(_sighting("USA-DTSF", holdable), "USA-DTSF")  # USA's, served by KOR
        not_holdable = seal(_sighting("KOR-KNPA", not_for_kor), "KOR-KNPA")
        unknown = seal(_sighting("KOR-KNPA", records_pb2.RecordRef(originator="JPN-NPA",
                                                                    record_id=str(uuid.uuid4()))), "KOR-KNPA")
        noted = _sighting("KOR-KNPA", holdable)
        noted.note = "seen at Busan port"
        changed = seal(noted, "KOR-KNPA")
        changed.payload = changed.payload.replace(b"Busan", b"Pusan")  # one byte changed after signing
        hostile.sightings.append(sync_pb2.PullSightingsResponse(
            entries=[wrong_key, claims_other, relayed_usa, not_holdable, unknown, changed, honest],
            cursor=b"after-7"))
        report = jpn.puller.pull("KOR-KNPA")
        assert report.sightings == 1
        assert [s.sighting_id for s in _held(jpn, holdable)] == [
            records_pb2.Sighting.FromString(honest.payload).sighting_id]
        assert _held(jpn, not_for_kor) == []
        events = [e for e in security_events(jpn.store) if e.kind == "sighting-refused"]
        assert len(events) == 6 and {e.peer for e in events} == {"KOR-KNPA"}
        reasons = [json.loads(e.detail)["reason"] for e in events]
        assert "bad signature" in reasons[0]
        assert "claims reporter 'KOR-KNPA' but is signed by GBR-NPSA" in reasons[1]
        assert "never relayed" in reasons[2]
        assert "reporter may not hold the record" in reasons[3]
        assert "does not know" in reasons[4]
        assert "bad signature" in reasons[5]
        # The batch was stored with its cursor: the next pull resumes after it.
        assert stored.sighting_cursor(jpn.store, "KOR-KNPA") == b"after-7"
        jpn.puller.pull("KOR-KNPA")
        assert hostile.sighting_calls[-1].cursor == b"after-7"
        # A batch over the size asked is refused whole, cursor and all.
        hostile.sightings.append(sync_pb2.PullSightingsResponse(
            entries=[honest] * (jpn.config.limits.pull_batch_entries + 1), cursor=b"flood"))
        assert "over the" in jpn.puller.pull("KOR-KNPA").error
        assert stored.sighting_cursor(jpn.store, "KOR-KNPA") == b"after-7"
    finally:
        hostile.stop()


def test_relayed_holders_appear_in_disclosures(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    gbr = federation.start_node("GBR-NPSA", tmp_path / "gbr")
    ref = _submit(federation, jpn, "sato", ["USA-DTSF", "GBR-NPSA"], tlp="GREEN")
    usa.puller.pull("JPN-NPA")
    assert gbr.puller.pull("USA-DTSF").applied.stored == 1  # GBR-NPSA gets it from USA-DTSF, not JPN-NPA
    # USA-DTSF's own audit knows it relayed the record.
    rchen = _liaison(federation, usa, "rchen")
    at_usa = rchen.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
    assert [(r.holder, r.via, r.source) for r in at_usa.relayed] == [("GBR-NPSA", "USA-DTSF", "audit")]
    # JPN-NPA learns it from USA-DTSF's signed report, pulled with its sightings.
    suzuki = _liaison(federation, jpn, "suzuki")
    assert list(suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10).relayed) == []
    jpn.puller.pull("USA-DTSF")
    at_jpn = suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
    assert [d.partner for d in at_jpn.disclosures] == ["USA-DTSF"]  # its own pulls: USA-DTSF only
    assert [(r.holder, r.via, r.source) for r in at_jpn.relayed] == [("GBR-NPSA", "USA-DTSF", "reported")]
    # Reported once per holder, however often it is relayed again; never shown as a sighting.
    gbr.puller.pull("USA-DTSF")
    jpn.puller.pull("USA-DTSF")
    assert len(suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10).relayed) == 1
    assert list(suzuki.Sightings(liaison_pb2.SightingsRequest(ref=ref), timeout=10).sightings) == []


def test_a_relay_report_is_kept_only_by_the_records_originator(federation: Federation, tmp_path: Path) -> None:
    """A relay report tells an originator who holds its record through a partner. A partner that
    addresses one to a third agency (``releasable_to``, which an honest relay report never carries)
    would plant "relayed holders" in that agency's Disclosures: refused, with a security event."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    ref = _submit(federation, jpn, "sato", ["USA-DTSF", "KOR-KNPA"], tlp="GREEN")
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    forge = Forge(federation, "KOR-KNPA")
    hostile = HostilePartner(federation, "KOR-KNPA").start()
    try:
        planted = _sighting("KOR-KNPA", ref, records_pb2.VERDICT_RELAYED)
        planted.holder = "GBR-NPSA"
        planted.releasable_to.append("USA-DTSF")
        hostile.sightings.append(sync_pb2.PullSightingsResponse(
            entries=[forge.seal(planted.SerializeToString(), by="KOR-KNPA", payload_type=SIGHTING_TYPE)],
            cursor=b"after-1"))
        report = usa.puller.pull("KOR-KNPA")
        assert report.sightings == 0
        rchen = _liaison(federation, usa, "rchen")
        assert list(rchen.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10).relayed) == []
        events = [json.loads(e.detail)["reason"] for e in security_events(usa.store) if e.kind == "sighting-refused"]
        assert len(events) == 1 and "relay report" in events[0]
    finally:
        hostile.stop()


def _profile(federation: Federation, agency: str, handle: str) -> list[str]:
    return ["--profile", str(federation.pki_dir / agency / "users" / f"{handle}.profile.toml")]


def test_sighting_commands(federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    gbr = federation.start_node("GBR-NPSA", tmp_path / "gbr")
    ref = _submit(federation, jpn, "sato", ["USA-DTSF", "GBR-NPSA"], tlp="GREEN")
    usa.puller.pull("JPN-NPA")
    gbr.puller.pull("USA-DTSF")
    name = f"JPN-NPA/{ref.record_id}"
    usa_user = _profile(federation, "USA-DTSF", "rchen")
    assert main(["sighting", name, "--verdict", "confirmed", "--note", "same shipper", *usa_user]) == 0
    assert "reported confirmed on " + name in capsys.readouterr().out
    assert main(["sighting", name, "--verdict", "maybe", *usa_user]) == 2
    assert "invalid choice" in capsys.readouterr().err
    jpn.puller.pull("USA-DTSF")
    assert main(["sightings", ref.record_id[:8], *_profile(federation, "JPN-NPA", "sato")]) == 0
    out = capsys.readouterr().out
    assert "USA-DTSF" in out and "rchen" in out and "confirmed" in out and "same shipper" in out
    assert main(["query", "--format", "json", *_profile(federation, "JPN-NPA", "sato")]) == 0
    counts = [r.get("sightings") for r in json.loads(capsys.readouterr().out)]
    assert counts == [{"seen": 0, "confirmed": 1, "false_positive": 0}]
    assert main(["get", ref.record_id[:8], *_profile(federation, "JPN-NPA", "sato")]) == 0
    assert "0 seen, 1 confirmed, 0 false positive by partners" in capsys.readouterr().out
    assert main(["disclosures", name, "--format", "json", *_profile(federation, "JPN-NPA", "suzuki")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(r["holder"], r["via"], r["source"]) for r in shown["relayed"]] == [("GBR-NPSA", "USA-DTSF", "reported")]
    assert main(["disclosures", name, *_profile(federation, "JPN-NPA", "suzuki")]) == 0
    assert "reported by USA-DTSF" in capsys.readouterr().out


# --- property: the sighting decisions -----------------------------------------------------------

released_sets = st.frozensets(st.sampled_from(sorted(KNOWN)), max_size=4)


@given(principal=principals, originator=agencies, released=released_sets, m=markings)
def test_a_sighting_goes_only_to_the_originator_or_where_released_and_held(
    principal: Principal, originator: str, released: frozenset[str], m: Marking
) -> None:
    """Served to a node of the originator, or of an agency it was released to *that may hold the
    record*; never to a user, never anywhere else."""
    record = decide(holder="USA-DTSF", principal=principal, originator=originator, marking=m, known_agencies=KNOWN)
    allowed = sighting_releasable(principal=principal, record_originator=originator, released_to=released,
                                  record=record).allowed
    expected = principal.role is Role.NODE and (
        principal.agency == originator or (principal.agency in released and record.allowed))
    assert allowed == expected
    # Without the record's decision (the reporter no longer holds it) only the originator gets it.
    alone = sighting_releasable(principal=principal, record_originator=originator, released_to=released, record=None)
    assert alone.allowed == (principal.role is Role.NODE and principal.agency == originator)


@given(reporter=agencies, served_by=agencies, receiver=agencies, originator=agencies, released=released_sets,
       holds=st.booleans(), reporter_may=st.sampled_from([None, True, False]), relay_report=st.booleans())
def test_a_sighting_is_kept_only_from_its_reporter_on_a_record_it_may_hold(
    reporter: str, served_by: str, receiver: str, originator: str, released: frozenset[str], holds: bool,
    reporter_may: bool | None, relay_report: bool,
) -> None:
    decision = None if reporter_may is None else Decision(reporter_may, "x")
    kept = sighting_acceptable(receiver=receiver, reporter=reporter, served_by=served_by,
                               record_originator=originator, released_to=released, reporter_holds=decision,
                               receiver_holds=holds, relay_report=relay_report).allowed
    # A relay report is the originator's alone; other sightings also go where released and held.
    addressed = receiver == originator or (not relay_report and receiver in released and holds)
    assert kept == (served_by == reporter and addressed and reporter_may is True)


def test_a_partner_that_always_has_more_sightings_is_cut_at_the_pulls_bounds(
    federation: Federation, tmp_path: Path
) -> None:
    limits = Limits(pull_batch_entries=2, pull_max_entries=6)
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", limits=limits)
    hostile = HostilePartner(federation, "KOR-KNPA").start()
    try:
        hostile.sightings.extend(sync_pb2.PullSightingsResponse(cursor=b"c%d" % i, more=True) for i in range(100))
        report = jpn.puller.pull("KOR-KNPA")
        assert report.error == "" and len(hostile.sighting_calls) == 6 // 2 + 2
        # Each empty batch was still stored with its cursor: the next pull resumes from the last.
        assert stored.sighting_cursor(jpn.store, "KOR-KNPA") == b"c4"
        jpn.puller.pull("KOR-KNPA")
        assert hostile.sighting_calls[5].cursor == b"c4"
    finally:
        hostile.stop()


def test_a_reporter_restored_from_an_older_backup_loses_no_sighting_to_the_originator(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    ref = _submit(federation, jpn, "sato", ["USA-DTSF"])
    assert usa.puller.pull("JPN-NPA").applied.stored == 1

    def report(note: str) -> str:
        return _report(_liaison(federation, usa, "jmiller"), ref, records_pb2.VERDICT_SEEN, note).sighting_id

    def restart(restore: bool = False) -> Node:
        usa.stop(grace=0)
        federation.nodes.remove(usa)
        if restore:
            federation.backend.restore(tmp_path / "usa", tmp_path / "backup")
        else:
            federation.backend.backup(tmp_path / "usa", tmp_path / "backup")
        return federation.start_node("USA-DTSF", tmp_path / "usa")

    before = [report("one"), report("two")]
    assert jpn.puller.pull("USA-DTSF").sightings == 2
    usa = restart()  # the backup: two sightings
    lost = report("three, reported after the backup")
    assert jpn.puller.pull("USA-DTSF").sightings == 1
    # USA-DTSF is restored from the backup and reports again: its new sightings reuse the seqs of
    # the one the restore lost, where JPN-NPA's cursor stands.
    usa = restart(restore=True)
    after = [report("four, after the restore"), report("five")]
    pulled = jpn.puller.pull("USA-DTSF")
    assert pulled.error == "" and pulled.sightings == 2  # the two new ones; the others held once
    held = [s.sighting_id for s in _held(jpn, ref)]
    assert sorted(held) == sorted([*before, lost, *after])  # nothing missed, nothing twice
    # Back to an ordinary cursor: nothing again, then the next one alone.
    assert jpn.puller.pull("USA-DTSF").sightings == 0
    report("six")
    assert jpn.puller.pull("USA-DTSF").sightings == 1 and len(_held(jpn, ref)) == 6


def test_sightings_of_a_record_the_caller_may_not_see_answer_as_if_it_were_absent(
    federation: Federation, tmp_path: Path,
) -> None:
    """The Sightings list of a SECRET record: NOT_FOUND for a user not cleared for it, word for word
    as for a record that does not exist; refused for a user of another agency, whose own node
    alone serves them; INVALID_ARGUMENT, naming the field, for a malformed ref."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    jmiller = UserClient.of(federation.user_channel(usa, "USA-DTSF", "jmiller"))
    marking = records_pb2.Marking(classification="SECRET", releasable_to=["JPN-NPA"], tlp="AMBER")
    ref = jmiller.submission.Submit(submission_pb2.SubmitRequest(draft=draft(marking=marking)), timeout=10).receipt.ref
    assert jpn.puller.pull("USA-DTSF").applied.stored == 1
    suzuki = _liaison(federation, jpn, "suzuki")  # cleared to SECRET
    _report(suzuki, ref, records_pb2.VERDICT_CONFIRMED, "the same shell company")
    assert [s.note for s in suzuki.Sightings(liaison_pb2.SightingsRequest(ref=ref), timeout=10).sightings] == [
        "the same shell company"]

    def refused(stub: liaison_pb2_grpc.LiaisonServiceStub, asked: records_pb2.RecordRef) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Sightings(liaison_pb2.SightingsRequest(ref=asked), timeout=10)
        return caught.value

    hidden = refused(_liaison(federation, jpn, "ito"), ref)  # cleared to RESTRICTED only
    absent = refused(suzuki, records_pb2.RecordRef(originator="USA-DTSF",
                                                   record_id="00000000-0000-4000-8000-000000000000"))
    assert hidden.code() == absent.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.details() == absent.details()
    rchen_at_jpn = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "USA-DTSF", "rchen"))
    foreign = refused(rchen_at_jpn, ref)  # a US officer's certificate presented to JPN-NPA's node
    assert foreign.code() == grpc.StatusCode.PERMISSION_DENIED
    malformed = refused(suzuki, records_pb2.RecordRef(originator="USA-DTSF"))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT and (malformed.details() or "").startswith("ref")
