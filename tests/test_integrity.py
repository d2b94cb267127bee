"""An insider with write access to the node's database (the SQLite file, or the PostgreSQL
tables) but not to the node host's key files cannot widen a disclosure or rewrite history.

Each attack edits the real database of a real node with real SQL, then asks through the
real services over mutual TLS: an edited row is never served, the operator sees a security
event, and ``exchange audit verify`` exits non-zero naming the record.
"""

from __future__ import annotations

import json
import logging
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path

import grpc
import pytest

from exchange.cli.main import main
from exchange.node.server import Node
from exchange.records.envelope import RECORD_TYPE, open_record
from exchange.store import audit
from exchange.store.current import seal_problems
from exchange.store.events import security_events
from exchange.v1 import liaison_pb2, liaison_pb2_grpc, query_pb2, records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft

# What the insider writes over the marking columns: anyone, anything, anywhere.
LOWERED = {"classification": "UNCLASSIFIED", "releasable_to": "GBR-NPSA KOR-KNPA USA-DTSF", "tlp": "CLEAR",
           "caveats": ""}


def _marking(classification: str, rel: list[str], tlp: str, caveats: list[str] | None = None) -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=rel, tlp=tlp, caveats=caveats or [])


def _submit(analyst: UserClient, title: str, marking: records_pb2.Marking) -> records_pb2.RecordRef:
    request = submission_pb2.SubmitRequest(draft=draft(title=title, marking=marking))
    return analyst.submission.Submit(request, timeout=10).receipt.ref


def _partner(federation: Federation, node: Node, agency: str) -> sync_pb2_grpc.SyncServiceStub:
    key = (federation.pki_dir / agency / "node.key").read_bytes()
    cert = (federation.pki_dir / agency / "node.crt").read_bytes()
    return sync_pb2_grpc.SyncServiceStub(federation.channel(node.port, server_agency=node.config.agency, key=key,
                                                     cert=cert))


def _pulled(federation: Federation, stub: sync_pb2_grpc.SyncServiceStub) -> set[str]:
    """Record ids a partner's pull from the start streams (each verified as signed)."""
    found: set[str] = set()
    for batch in stub.Pull(sync_pb2.PullRequest(), timeout=10):
        found |= {open_record(e, federation.manifest).ref.record_id for e in batch.entries
                  if e.payload_type == RECORD_TYPE}
    return found


def _sql(federation: Federation, data_dir: Path, statement: str, **params: object) -> int:
    """The insider: one statement on the node's database; returns the rows it changed."""
    from sqlalchemy import text

    engine = federation.backend.engine(data_dir)
    try:
        with engine.begin() as conn:
            return int(conn.execute(text(statement), params).rowcount)
    finally:
        engine.dispose()


def _config(federation: Federation, tmp_path: Path, data_dir: Path, agency: str = "JPN-NPA") -> Path:
    config = tmp_path / f"{agency}.toml"
    config.write_text(
        f'agency = "{agency}"\nlisten = "127.0.0.1:0"\npki_dir = "{federation.pki_dir}"\n'
        f'data_dir = "{data_dir}"\n{federation.backend.config_line(data_dir)}',
        encoding="utf-8",
    )
    return config


def _verify(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "--config", str(config)])
    return code, capsys.readouterr().out


def _integrity_events(node: Node) -> list[dict[str, str]]:
    """The details of the node's integrity events."""
    return [json.loads(e.detail) for e in security_events(node.store) if e.kind == "integrity"]


def _set(columns: Mapping[str, object]) -> str:
    return ", ".join(f"{name} = :{name}" for name in columns)


@pytest.mark.parametrize("tables", [("records",), ("log",), ("records", "log")])
def test_a_lowered_marking_is_never_served(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], tables: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "jpn"
    jpn = federation.start_node("JPN-NPA", data_dir)
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    secret = _submit(sato, "秘 ORCON 迂回調達", _marking("SECRET", ["USA-DTSF"], "RED", ["ORCON"]))
    shared = _submit(sato, "共有 迂回調達", _marking("RESTRICTED", ["USA-DTSF"], "GREEN"))
    ito = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "ito"))  # RESTRICTED
    kor = _partner(federation, jpn, "KOR-KNPA")  # not in the release list at all
    assert _pulled(federation, kor) == set()

    # The insider lowers the secret record's marking in the tables the decision reads.
    where = "originator = 'JPN-NPA' AND record_id = :rid"
    for table in tables:
        assert _sql(federation, data_dir, f"UPDATE {table} SET {_set(LOWERED)} WHERE {where}",
                    rid=secret.record_id, **LOWERED) >= 1
    if "log" in tables:
        assert _sql(federation, data_dir, f"UPDATE log SET audience = :a WHERE {where}",
                    a="GBR-NPSA JPN-NPA KOR-KNPA USA-DTSF", rid=secret.record_id) == 1

    for _ in range(2):  # read twice: still one event per record and problem
        with pytest.raises(grpc.RpcError) as refused:
            ito.query.Get(query_pb2.GetRequest(ref=secret), timeout=10)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        found = ito.query.Search(query_pb2.SearchRequest(text="迂回調達"), timeout=10).records
        assert [open_record(r.envelope, federation.manifest).ref.record_id for r in found] == [shared.record_id]
        assert _pulled(federation, kor) == set()
        assert _pulled(federation, _partner(federation, jpn, "USA-DTSF")) == {shared.record_id}
    events = _integrity_events(jpn)
    assert events and {(e["originator"], e["record_id"]) for e in events} == {("JPN-NPA", secret.record_id)}
    assert len(events) == len({e["problem"] for e in events}) <= 2

    federation.stop()
    code, out = _verify(_config(federation, tmp_path, data_dir), capsys)
    assert code == 1
    assert f"record JPN-NPA/{secret.record_id}" in out and "do not match their seals" in out
    assert shared.record_id not in out


def _envelope_never_served(federation: Federation, jpn: Node, shared: records_pb2.RecordRef, tmp_path: Path,
                           data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A released record whose stored envelope is not the one sealed: a user cleared for it
    gets NOT_FOUND, a partner's pull gets nothing, one integrity event, and verify names it."""
    ito = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "ito"))
    with pytest.raises(grpc.RpcError) as refused:
        ito.query.Get(query_pb2.GetRequest(ref=shared), timeout=10)
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert _pulled(federation, _partner(federation, jpn, "USA-DTSF")) == set()
    assert {e["record_id"] for e in _integrity_events(jpn)} == {shared.record_id}
    federation.stop()
    code, out = _verify(_config(federation, tmp_path, data_dir), capsys)
    assert code == 1 and f"record JPN-NPA/{shared.record_id}" in out and "envelope" in out


def test_an_envelope_swapped_under_a_released_row_is_never_served(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "jpn"
    jpn = federation.start_node("JPN-NPA", data_dir)
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    secret = _submit(sato, "秘", _marking("SECRET", [], "RED", ["ORCON"]))
    shared = _submit(sato, "共有", _marking("RESTRICTED", ["USA-DTSF"], "GREEN"))
    # The secret record's signed bytes, put under the released record's (intact) columns.
    assert _sql(federation, data_dir,
                "UPDATE log SET envelope = (SELECT envelope FROM log WHERE record_id = :secret) "
                "WHERE record_id = :shared", secret=secret.record_id, shared=shared.record_id) == 1
    _envelope_never_served(federation, jpn, shared, tmp_path, data_dir, capsys)


@pytest.mark.parametrize("field", ["key_id", "payload_type"])
def test_an_envelope_naming_another_key_or_type_than_sealed_is_never_served(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str
) -> None:
    """The sealed payload in an envelope that names another signing key (a compromised key's
    signature over the same payload, say) or payload type than the sealed columns, which the
    decision and the distrust of keys read: not the envelope sealed, so never served."""
    from sqlalchemy import text

    data_dir = tmp_path / "jpn"
    jpn = federation.start_node("JPN-NPA", data_dir)
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    shared = _submit(sato, "共有", _marking("RESTRICTED", ["USA-DTSF"], "GREEN"))
    engine = federation.backend.engine(data_dir)
    try:
        with engine.connect() as conn:
            held = records_pb2.Envelope.FromString(bytes(conn.execute(
                text("SELECT envelope FROM log WHERE record_id = :rid"), {"rid": shared.record_id}).scalar_one()))
    finally:
        engine.dispose()
    setattr(held, field, getattr(held, field) + "-other")
    assert _sql(federation, data_dir, "UPDATE log SET envelope = :envelope WHERE record_id = :rid",
                envelope=held.SerializeToString(), rid=shared.record_id) == 1
    _envelope_never_served(federation, jpn, shared, tmp_path, data_dir, capsys)


@pytest.mark.parametrize("edit", ["lowered", "swapped"])
def test_a_row_served_before_it_was_edited_is_not_served_after(
    federation: Federation, tmp_path: Path, edit: str
) -> None:
    """The node remembers rows that passed their check (integrity.PASSED_ROWS): a row served
    before the insider's edit, and so remembered, is checked afresh once edited."""
    data_dir = tmp_path / "jpn"
    jpn = federation.start_node("JPN-NPA", data_dir)
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    secret = _submit(sato, "秘 迂回調達", _marking("SECRET", [], "GREEN"))
    shared = _submit(sato, "共有 迂回調達", _marking("RESTRICTED", ["USA-DTSF"], "GREEN"))
    suzuki = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "suzuki"))  # SECRET
    ito = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "ito"))  # RESTRICTED
    for ref in (secret, shared):  # both rows pass their check and are remembered
        suzuki.query.Get(query_pb2.GetRequest(ref=ref), timeout=10)
    assert len(suzuki.query.Search(query_pb2.SearchRequest(text="迂回調達"), timeout=10).records) == 2

    where = "originator = 'JPN-NPA' AND record_id = :rid"
    if edit == "lowered":  # the secret record's marking lowered in both tables, for ito to see
        for table in ("records", "log"):
            assert _sql(federation, data_dir, f"UPDATE {table} SET classification = 'RESTRICTED' WHERE {where}",
                        rid=secret.record_id) == 1
        hidden, reader = secret, ito
    else:  # the secret record's signed bytes under the released record's intact columns
        assert _sql(federation, data_dir, "UPDATE log SET envelope = (SELECT envelope FROM log WHERE "
                    "record_id = :secret) WHERE record_id = :shared", secret=secret.record_id,
                    shared=shared.record_id) == 1
        hidden, reader = shared, suzuki
    with pytest.raises(grpc.RpcError) as refused:
        reader.query.Get(query_pb2.GetRequest(ref=hidden), timeout=10)
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    found = reader.query.Search(query_pb2.SearchRequest(text="迂回調達"), timeout=10).records
    assert hidden.record_id not in {open_record(r.envelope, federation.manifest).ref.record_id for r in found}
    assert {e["record_id"] for e in _integrity_events(jpn)} == {hidden.record_id}


def test_a_received_record_edited_on_the_holder_is_not_served(federation: Federation, tmp_path: Path) -> None:
    """The same on a node that holds a partner's record (received rows are sealed on receipt)."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    ref = _submit(sato, "秘", _marking("SECRET", ["USA-DTSF"], "AMBER"))
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    rchen = UserClient.of(federation.user_channel(usa, "USA-DTSF", "rchen"))  # SECRET: may see it
    assert rchen.query.Get(query_pb2.GetRequest(ref=ref), timeout=10).record.envelope.payload
    # USA's insider releases it to GBR and relays: GBR's node must not get it from USA.
    for table in ("records", "log"):
        _sql(federation, tmp_path / "usa", f"UPDATE {table} SET {_set(LOWERED)} WHERE record_id = :rid",
             rid=ref.record_id, **LOWERED)
    assert _pulled(federation, _partner(federation, usa, "GBR-NPSA")) == set()
    with pytest.raises(grpc.RpcError):
        rchen.query.Get(query_pb2.GetRequest(ref=ref), timeout=10)
    assert {e["record_id"] for e in _integrity_events(usa)} == {ref.record_id}


def _two_received(
    federation: Federation, tmp_path: Path, *titles: str,
) -> tuple[Node, records_pb2.RecordRef, records_pb2.RecordRef]:
    """USA-DTSF's node, holding two SECRET records of JPN-NPA's (their refs), pulled from its node."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    first, second = (_submit(sato, title, _marking("SECRET", ["USA-DTSF"], "AMBER")) for title in titles)
    assert usa.puller.pull("JPN-NPA").applied.stored == 2
    return usa, first, second


@pytest.mark.parametrize("receipt", [{"received_from": "KOR-KNPA"}, {"received_at": 1}])
def test_a_received_record_whose_receipt_was_edited_is_not_served(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], receipt: dict[str, object],
) -> None:
    """Where an entry came from, and when, is sealed (revision 0017): users are shown it as the
    record's provenance, TAXII dates entries by it, and re-signing after a key leak trusts only
    the entries a node wrote itself. An insider who rewrites it breaks the seal."""
    usa, ref, kept = _two_received(federation, tmp_path, "出所", "無傷")
    rchen = UserClient.of(federation.user_channel(usa, "USA-DTSF", "rchen"))
    held = rchen.query.Get(query_pb2.GetRequest(ref=ref), timeout=10).record
    assert held.received_from == "JPN-NPA"
    assert _sql(federation, tmp_path / "usa", f"UPDATE log SET {_set(receipt)} WHERE record_id = :rid",
                rid=ref.record_id, **receipt) == 1
    with pytest.raises(grpc.RpcError) as caught:
        rchen.query.Get(query_pb2.GetRequest(ref=ref), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # as if it were not there
    assert rchen.query.Get(query_pb2.GetRequest(ref=kept), timeout=10).record.received_from == "JPN-NPA"
    assert {e["record_id"] for e in _integrity_events(usa)} == {ref.record_id}
    code, out = _verify(_config(federation, tmp_path, tmp_path / "usa", "USA-DTSF"), capsys)
    assert code != 0 and ref.record_id in out and kept.record_id not in out


def _sightings(stub: liaison_pb2_grpc.LiaisonServiceStub, ref: records_pb2.RecordRef) -> list[str]:
    return [s.note for s in stub.Sightings(liaison_pb2.SightingsRequest(ref=ref), timeout=10).sightings]


def _forged_envelope(federation: Federation, data_dir: Path, sighting_id: str) -> bytes:
    """The stored envelope of one sighting with its note rewritten, the signature left as it was."""
    [(stored,)] = federation.backend.rows(data_dir, "SELECT envelope FROM sightings WHERE sighting_id = :sid",
                                          sid=sighting_id)
    envelope = records_pb2.Envelope.FromString(bytes(stored))
    payload = records_pb2.Sighting.FromString(envelope.payload)
    payload.note = "the insider's words"
    envelope.payload = payload.SerializeToString()
    return envelope.SerializeToString()


@pytest.mark.parametrize("edit", ["moved to another record", "verdict", "reporter", "note rewritten"])
def test_a_sighting_edited_in_the_database_is_not_shown(federation: Federation, tmp_path: Path, edit: str) -> None:
    """The sightings table has no seal: what users are shown is the signed envelope, verified
    again as it is read, which must name the record asked about and the row's reporter and
    verdict. An insider who moves a sighting to another record (whose readers may not see the
    first), changes its verdict, credits it to another agency or rewrites its note gets it left
    out, with an integrity event for the record."""
    usa, ref, other = _two_received(federation, tmp_path, "見た", "別件")
    rchen = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(usa, "USA-DTSF", "rchen"))
    edited, _ = (rchen.ReportSighting(liaison_pb2.ReportSightingRequest(
        ref=ref, verdict=records_pb2.VERDICT_SEEN, note=note), timeout=10).sighting for note in ("edited", "kept"))
    assert _sightings(rchen, ref) == ["edited", "kept"] and _sightings(rchen, other) == []
    column, looked_up = {"moved to another record": ("record_id", other), "verdict": ("verdict", ref),
                         "reporter": ("reporter", ref), "note rewritten": ("envelope", ref)}[edit]
    value: object = (_forged_envelope(federation, tmp_path / "usa", edited.sighting_id) if column == "envelope"
                     else {"record_id": other.record_id, "verdict": "confirmed", "reporter": "KOR-KNPA"}[column])
    assert _sql(federation, tmp_path / "usa", f"UPDATE sightings SET {column} = :value WHERE sighting_id = :sid",
                value=value, sid=edited.sighting_id) == 1
    assert _sightings(rchen, ref) == ["kept"] and _sightings(rchen, other) == []
    assert _integrity_events(usa) == [{"originator": "JPN-NPA", "record_id": looked_up.record_id,
                                       "problem": "a sighting stored on this record is not the one its reporter "
                                                  "signed"}]


def test_a_relay_report_edited_in_the_database_is_not_shown(federation: Federation, tmp_path: Path) -> None:
    """A partner's signed report that it relayed a record ("GBR-NPSA via USA-DTSF" in the
    originator's Disclosures) is read from its envelope too: a holder written over is left out."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    gbr = federation.start_node("GBR-NPSA", tmp_path / "gbr")
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    ref = _submit(sato, "転送", _marking("CONFIDENTIAL", ["USA-DTSF", "GBR-NPSA"], "GREEN"))
    usa.puller.pull("JPN-NPA")
    assert gbr.puller.pull("USA-DTSF").applied.stored == 1
    jpn.puller.pull("USA-DTSF")
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))

    def relayed() -> list[tuple[str, str, str]]:
        answer = suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
        return [(r.holder, r.via, r.source) for r in answer.relayed]

    assert relayed() == [("GBR-NPSA", "USA-DTSF", "reported")]
    assert _sql(federation, tmp_path / "jpn", "UPDATE sightings SET holder = 'KOR-KNPA' WHERE verdict = 'relayed'") == 1
    assert relayed() == []
    assert [e["record_id"] for e in _integrity_events(jpn)] == [ref.record_id]


def _entries(stub: sync_pb2_grpc.SyncServiceStub) -> list[str]:
    """The payload types of every entry a partner's pull from the start streams."""
    return [e.payload_type for batch in stub.Pull(sync_pb2.PullRequest(), timeout=10) for e in batch.entries]


WIDENED = "GBR-NPSA JPN-NPA KOR-KNPA USA-DTSF"  # the insider's audience: every agency


def test_an_edited_audience_never_routes_a_withdrawal(federation: Federation, tmp_path: Path) -> None:
    """A withdrawal goes to every earlier audience, read from the log rows: an insider who adds
    an agency to a row's audience must not have the withdrawal (and with it the record's
    existence) sent there, neither by the originator's node (submission: record A, its first
    version's row edited on JPN) nor by a holder that receives the withdrawal and relays it
    (received: record B, edited on USA). The edited row is left out and reported."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    released = _marking("CONFIDENTIAL", ["USA-DTSF"], "GREEN")
    a, b = (_submit(sato, title, released) for title in ("甲", "乙"))
    sato.submission.Revise(submission_pb2.ReviseRequest(ref=a, base_version=1, draft=draft(
        title="甲", summary="revised", marking=released)), timeout=10)
    assert usa.puller.pull("JPN-NPA").received == 3
    for data_dir, ref in ((tmp_path / "jpn", a), (tmp_path / "usa", b)):
        assert _sql(federation, data_dir, "UPDATE log SET audience = :a WHERE record_id = :rid AND version = 1",
                    a=WIDENED, rid=ref.record_id) == 1
    for ref, version in ((a, 2), (b, 1)):
        sato.submission.Retract(submission_pb2.RetractRequest(ref=ref, base_version=version, reason="mistaken"),
                                timeout=10)
    report = usa.puller.pull("JPN-NPA")
    assert report.applied.withdrawals == 2 and not report.error

    assert _entries(_partner(federation, jpn, "KOR-KNPA")) == []  # the originator's node
    assert _entries(_partner(federation, usa, "GBR-NPSA")) == []  # the holder that relays
    for node, ref in ((jpn, a), (usa, b)):
        assert {(e["record_id"], e["problem"]) for e in _integrity_events(node)} == {
            (ref.record_id, "its log entry 1 does not match its seal" if node is jpn else
             "its log entry 2 does not match its seal")}
        [problem] = seal_problems(node.store)  # what `exchange audit verify` reports
        assert f"record JPN-NPA/{ref.record_id}" in problem


def _pulled_by_two(federation: Federation, tmp_path: Path) -> tuple[Node, records_pb2.RecordRef, Path]:
    data_dir = tmp_path / "jpn"
    jpn = federation.start_node("JPN-NPA", data_dir)
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    kor = federation.start_node("KOR-KNPA", tmp_path / "kor")
    sato = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "sato"))
    ref = _submit(sato, "共有", _marking("CONFIDENTIAL", ["USA-DTSF", "KOR-KNPA"], "GREEN"))
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    assert kor.puller.pull("JPN-NPA").applied.stored == 1
    return jpn, ref, data_dir


def test_honest_operation_verifies_clean(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn, ref, data_dir = _pulled_by_two(federation, tmp_path)
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    answer = suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
    assert sorted(d.partner for d in answer.disclosures) == ["KOR-KNPA", "USA-DTSF"]
    assert seal_problems(jpn.store) == [] and audit.verify_store(jpn.store) == []
    federation.stop()
    code, out = _verify(_config(federation, tmp_path, data_dir), capsys)
    assert code == 0 and "audit log intact" in out and "records intact" in out


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("UPDATE disclosure_index SET partner = 'GBR-NPSA' WHERE partner = 'KOR-KNPA'",
         "names GBR-NPSA, the audit chain KOR-KNPA (edited)"),
        ("DELETE FROM disclosure_index WHERE partner = 'KOR-KNPA'",
         "sent to KOR-KNPA (audit entry 3) is missing from disclosure_index (deleted)"),
        ("UPDATE disclosure_index SET audit_seq = 1 WHERE partner = 'KOR-KNPA'",
         "is not a disclosure the audit chain records"),
    ],
)
def test_an_edited_or_deleted_disclosure_is_detected(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str, expected: str
) -> None:
    jpn, ref, data_dir = _pulled_by_two(federation, tmp_path)
    assert [e.action for e in audit.read_entries(jpn.store)] == ["submit", "pull", "pull"]
    assert _sql(federation, data_dir, tamper) == 1
    suzuki = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    answer = suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
    assert [d.partner for d in answer.disclosures] == ["USA-DTSF"]  # an edited row is not shown as it was made
    federation.stop()
    code, out = _verify(_config(federation, tmp_path, data_dir), capsys)
    assert code == 1 and f"record JPN-NPA/{ref.record_id}" in out and expected in out


def _rehash_tail(federation: Federation, data_dir: Path, keep: int, rehash: str) -> None:
    """The insider cuts the audit chain after entry ``keep`` and makes the rest look whole:
    the head in meta set to the new last entry, hashed the old way (plain SHA-256) or left
    as the node wrote it (a valid keyed prefix of the chain)."""
    from sqlalchemy import text

    engine = federation.backend.engine(data_dir)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit WHERE seq > :keep"), {"keep": keep})
            rows = conn.execute(text("SELECT seq, at, actor, action, detail, prev_hash, hash FROM audit "
                                     "ORDER BY seq")).all()
            prev, last = audit.GENESIS, bytes(rows[-1].hash)
            for row in rows:
                if rehash == "sha256":
                    last = audit.unkeyed_hash(prev, row.seq, row.at, row.actor, row.action, row.detail)
                    conn.execute(text("UPDATE audit SET prev_hash = :p, hash = :h WHERE seq = :s"),
                                 {"p": prev, "h": last, "s": row.seq})
                    prev = last
            conn.execute(text("UPDATE meta SET value = :v WHERE key = 'audit_head'"),
                         {"v": keep.to_bytes(8, "big") + last})
    finally:
        engine.dispose()


@pytest.mark.parametrize("rehash", ["keyed prefix", "sha256"])
def test_a_truncated_tail_with_a_recomputed_head_is_detected(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str], rehash: str
) -> None:
    jpn, ref, data_dir = _pulled_by_two(federation, tmp_path)
    assert len(audit.read_entries(jpn.store)) == 3
    federation.stop()
    _rehash_tail(federation, data_dir, 2, rehash)
    config = _config(federation, tmp_path, data_dir)
    code, out = _verify(config, capsys)
    assert code == 1
    assert "the chain does not reach the anchored head, entry 3 (it ends at entry 2)" in out
    if rehash == "sha256":
        assert "entry 1 was altered" in out

    # The node goes on (restarted, as after a reboot) and its chain grows past the anchored
    # entry: the anchor stays where it was, as evidence, and the operator is told.
    jpn = federation.start_node("JPN-NPA", data_dir)
    suzuki = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "suzuki"))
    for _ in range(3):
        suzuki.query.Get(query_pb2.GetRequest(ref=ref), timeout=10)
    assert len(audit.read_entries(jpn.store)) == 5
    assert [e["problem"] for e in _integrity_events(jpn)] == ["the audit chain no longer holds its anchored head"]
    federation.stop()
    code, out = _verify(config, capsys)
    assert code == 1 and "does not reach the anchored head, entry 3" in out


def test_the_integrity_key_is_made_once_and_its_absence_is_one_line(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = federation.pki_dir / "JPN-NPA" / "integrity.key"  # by `pki init`, like every private key
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and len(made.read_bytes()) == 32
    pki_dir = tmp_path / "pki"  # this node's own copy of the PKI, without a key
    shutil.copytree(federation.pki_dir / "JPN-NPA", pki_dir / "JPN-NPA")
    shutil.copy(federation.pki_dir / "manifest.toml", pki_dir / "manifest.toml")
    (pki_dir / "JPN-NPA" / "integrity.key").unlink()
    config = _config(federation, tmp_path, tmp_path / "jpn")
    argv = ["--config", str(config), "--pki-dir", str(pki_dir)]
    assert main(["db", "upgrade", *argv]) == 0  # a new database has nothing to seal yet
    capsys.readouterr()

    root = logging.getLogger()  # `node serve` points logging at this test's stderr: put it back
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["node", "serve", str(config), "--pki-dir", str(pki_dir)]) == 2
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no integrity key at" in err and "exchange pki integrity-key --config" in err

    assert main(["pki", "integrity-key", *argv]) == 0
    key = pki_dir / "JPN-NPA" / "integrity.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    before = key.read_bytes()
    capsys.readouterr()
    assert main(["pki", "integrity-key", *argv]) == 2  # never replaced: every seal depends on it
    assert "never replaced" in capsys.readouterr().err and key.read_bytes() == before
