"""SubmitBulk: many submissions in one call, each checked, signed, stored and audited as Submit
would, the stored ones committed together; one submission's refusal is its own result."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from exchange.node.server import Node
from exchange.node.submission import MAX_BULK_SUBMISSIONS
from exchange.records.envelope import RECORD_TYPE, Signer, content_hash, verify_envelope
from exchange.store import audit
from exchange.store.current import current_records, seal_problems
from exchange.store.local import find_references
from exchange.store.log import log_entries
from exchange.store.schema import audit as audit_table
from exchange.store.schema import observables, records, references
from exchange.v1 import records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft


def analyst(federation: Federation, node: Node, handle: str = "sato") -> UserClient:
    return UserClient.of(federation.user_channel(node, "JPN-NPA", handle))


def bulk(c: UserClient, *items: tuple[records_pb2.RecordDraft, str]) -> list[submission_pb2.SubmitBulkResult]:
    request = submission_pb2.SubmitBulkRequest(
        submissions=[submission_pb2.SubmitRequest(draft=d, reference=r) for d, r in items]
    )
    return list(c.submission.SubmitBulk(request, timeout=30).results)


def counts(node: Node) -> tuple[int, int, int]:
    """(records, references, audit entries) in the node's store."""
    with node.store.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one() for t in (records, references, audit_table)
        )


def test_each_submission_is_stored_signed_and_audited_or_refused_on_its_own(
    federation: Federation, tmp_path: Path
) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    sato = analyst(federation, node)
    _, _, audit_before = counts(node)
    bad_tlp = draft(marking=records_pb2.Marking(classification="CONFIDENTIAL", tlp="WHITE"))
    results = bulk(sato, (draft(title="一件目"), "B-1"), (bad_tlp, "B-2"), (draft(title="三件目"), "B-3"),
                   (draft(confidence=150), "B-4"), (draft(title="五件目"), ""))
    assert [r.WhichOneof("outcome") for r in results] == ["receipt", "refusal", "receipt", "refusal", "receipt"]
    assert results[1].refusal == "draft.marking.tlp: unknown TLP label 'WHITE'"
    assert results[3].refusal == "draft.confidence: expected 0..100, got 150"
    stored = [results[i].receipt for i in (0, 2, 4)]
    assert all(r.created and r.version == 1 and r.ref.originator == "JPN-NPA" for r in stored)
    assert len({r.ref.record_id for r in stored}) == 3
    assert counts(node) == (3, 2, audit_before + 3)  # the unreferenced one has no reference row

    # Each is a record the node signed on its own, as Submit makes them.
    for receipt, title in zip(stored, ("一件目", "三件目", "五件目"), strict=True):
        [entry] = log_entries(node.store, "JPN-NPA", receipt.ref.record_id)
        envelope = records_pb2.Envelope.FromString(entry.envelope)
        verify_envelope(envelope, "JPN-NPA", federation.manifest)
        assert content_hash(envelope.payload) == receipt.content_hash
        assert records_pb2.Record.FromString(envelope.payload).content.title == title
    assert audit.verify_store(node.store) == []

    # Again: the referenced ones are already submitted, the refused ones still refused.
    again = bulk(sato, (draft(title="一件目"), "B-1"), (bad_tlp, "B-2"), (draft(title="別物"), "B-3"))
    assert [r.WhichOneof("outcome") for r in again] == ["receipt", "refusal", "receipt"]
    first = stored[0]
    assert again[0].receipt == submission_pb2.Receipt(
        ref=first.ref, version=first.version, content_hash=first.content_hash, created=False)
    assert again[2].receipt.ref == stored[1].ref and not again[2].receipt.created
    assert counts(node)[:2] == (3, 2)


def test_one_reference_twice_in_a_call_stores_one_record(federation: Federation, tmp_path: Path) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    results = bulk(analyst(federation, node), (draft(title="最初"), "SAME"), (draft(title="二度目"), "SAME"))
    assert results[0].receipt.created and not results[1].receipt.created
    assert results[1].receipt.ref == results[0].receipt.ref
    assert counts(node)[:2] == (1, 1)


def test_a_call_over_the_limit_is_refused_whole(federation: Federation, tmp_path: Path) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    items = [(draft(), f"R-{i}") for i in range(MAX_BULK_SUBMISSIONS + 1)]
    with pytest.raises(grpc.RpcError) as refused:
        bulk(analyst(federation, node), *items)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"over the limit of {MAX_BULK_SUBMISSIONS}" in str(refused.value.details())
    assert counts(node)[:2] == (0, 0)


def test_only_analysts_may_submit_in_bulk(federation: Federation, tmp_path: Path) -> None:
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    with pytest.raises(grpc.RpcError) as denied:
        bulk(analyst(federation, node, "suzuki"), (draft(), "L-1"))  # a liaison officer
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert counts(node)[:2] == (0, 0)


def test_a_call_written_table_by_table_is_sealed_indexed_and_chained_like_single_submits(
    federation: Federation, tmp_path: Path
) -> None:
    """The bulk path writes each table in one statement: every row still carries its seal,
    every record its index rows, every record its own audit entry, in submission order."""
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    sato = analyst(federation, node)
    single = sato.submission.Submit(submission_pb2.SubmitRequest(draft=draft(title="単独"), reference="S-1"),
                                    timeout=30).receipt
    items = [(draft(title=f"一括 {i}"), f"T-{i}") for i in range(40)]
    results = bulk(sato, *items)
    assert all(r.receipt.created for r in results)
    assert seal_problems(node.store) == []
    assert audit.verify_store(node.store) == []
    with node.store.engine.connect() as conn:
        details = [row.detail for row in conn.execute(select(audit_table.c.detail).order_by(audit_table.c.seq))]
        indexed = conn.execute(select(func.count(func.distinct(observables.c.rid)))).scalar_one()
    ids = [single.ref.record_id, *(r.receipt.ref.record_id for r in results)]
    positions = [[n for n, d in enumerate(details) if f'"record_id":"{i}"' in d] for i in ids]
    assert all(len(p) == 1 for p in positions)  # one entry per record
    assert [p[0] for p in positions] == sorted(p[0] for p in positions)  # in submission order
    assert indexed == 41  # every draft has observables (tests.federation.draft)


def test_a_known_reference_costs_no_checking_or_signing_and_answers_the_current_version(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun's lines are answered from the references and the records they made, read for
    the whole call at once: the line's content is not checked again, nothing is signed, and
    the receipt names the record's current version, as a mixed call's new lines are stored."""
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    sato = analyst(federation, node)
    first = [r.receipt for r in bulk(sato, (draft(title="一"), "K-1"), (draft(title="二"), "K-2"),
                                     (draft(title="三"), "K-3"))]
    revised = sato.submission.Revise(submission_pb2.ReviseRequest(
        ref=first[0].ref, base_version=1, draft=draft(title="一 改")), timeout=30).receipt
    records_before, references_before, audit_before = counts(node)

    seals: list[str] = []
    seal = Signer.seal

    def counted(signer: Signer, payload_type: str, payload: bytes) -> records_pb2.Envelope:
        seals.append(payload_type)
        return seal(signer, payload_type, payload)

    monkeypatch.setattr(Signer, "seal", counted)  # every signature the node makes, with any key
    results = bulk(sato, (draft(title="一"), "K-1"), (draft(confidence=150), "K-2"), (draft(title="四"), "K-4"),
                   (draft(confidence=150), "K-5"), (draft(title="三"), "K-3"), (draft(title="四 again"), "K-4"))
    assert [r.WhichOneof("outcome") for r in results] == ["receipt", "receipt", "receipt", "refusal", "receipt",
                                                          "receipt"]
    assert results[0].receipt == submission_pb2.Receipt(  # the current version: the revision
        ref=first[0].ref, version=2, content_hash=revised.content_hash, created=False)
    assert results[1].receipt == submission_pb2.Receipt(  # its content, not valid now, was not read
        ref=first[1].ref, version=1, content_hash=first[1].content_hash, created=False)
    assert results[4].receipt == submission_pb2.Receipt(
        ref=first[2].ref, version=1, content_hash=first[2].content_hash, created=False)
    assert results[2].receipt.created and results[2].receipt.version == 1
    assert results[5].receipt.ref == results[2].receipt.ref and not results[5].receipt.created
    assert results[3].refusal == "draft.confidence: expected 0..100, got 150"
    assert seals == [RECORD_TYPE, RECORD_TYPE]  # K-4 and its duplicate in the call (stored once), nothing else
    assert counts(node) == (records_before + 1, references_before + 1, audit_before + 1)
    assert audit.verify_store(node.store) == []


def test_references_and_records_are_looked_up_by_key_in_chunks(federation: Federation, tmp_path: Path) -> None:
    """find_references and current_records (SubmitBulk's two queries; on PostgreSQL one key
    lookup per name) find exactly the names held, past one statement's 500 names."""
    node = federation.start_node("JPN-NPA", tmp_path / "jpn")
    sato = analyst(federation, node)
    held = [r.receipt for r in bulk(sato, *[(draft(title=f"件 {i}"), f"C-{i}") for i in range(3)])]
    names = [f"C-{i}" for i in range(600)] + ["C-1"]  # C-0..C-2 held; a name twice
    found = find_references(node.store, "sato", names)
    assert found == {f"C-{i}": r.ref.record_id for i, r in enumerate(held)}
    assert find_references(node.store, "suzuki", names) == {}  # another analyst's references are not theirs
    ids = [r.ref.record_id for r in held] + [f"00000000-0000-4000-8000-{i:012d}" for i in range(600)]
    records_held = current_records(node.store, "JPN-NPA", ids)
    assert sorted(records_held) == sorted(r.ref.record_id for r in held)
    assert {r.version for r in records_held.values()} == {1}
    assert current_records(node.store, "USA-DTSF", ids) == {}
