"""An agency's node end to end: submit, find, verify, revise, retract — on real parts."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from exchange.errors import VerificationError
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, open_record, verify_envelope
from exchange.store.log import log_entries
from exchange.v1 import query_pb2, records_pb2, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft


@pytest.fixture
def jpn(federation: Federation, tmp_path: Path):  # type: ignore[no-untyped-def]
    return federation.start_node("JPN-NPA", tmp_path / "jpn")


def client(federation: Federation, node, handle: str, agency: str = "JPN-NPA") -> UserClient:  # type: ignore[no-untyped-def]
    return UserClient.of(federation.user_channel(node, agency, handle))


def submit(c: UserClient, d: records_pb2.RecordDraft | None = None, reference: str = "") -> submission_pb2.Receipt:
    request = submission_pb2.SubmitRequest(draft=d or draft(), reference=reference)
    return c.submission.Submit(request, timeout=10).receipt


def search(c: UserClient, **kwargs: object) -> list[records_pb2.Record]:
    response = c.query.Search(query_pb2.SearchRequest(**kwargs), timeout=10)  # type: ignore[arg-type]
    return [records_pb2.Record.FromString(h.envelope.payload) for h in response.records]


def ids(records: list[records_pb2.Record]) -> set[str]:
    return {r.ref.record_id for r in records}


def test_analyst_submits_and_liaison_finds_it_every_way(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst, liaison = client(federation, jpn, "sato"), client(federation, jpn, "suzuki")
    company = draft(
        kind=records_pb2.KIND_ACTOR,
        title="第三国経由でマイコンを迂回輸出するフロント企業",
        summary="Front company transshipping microcontrollers via a third country.",
        observables=[
            records_pb2.Observable(type="company_name", value="ABC商事 株式会社"),
            records_pb2.Observable(type="email", value="Procurement@ABC-Trading.example"),
            records_pb2.Observable(type="hs_code", value="8542.31"),
        ],
    )
    receipt = submit(analyst, company)
    assert receipt.ref.originator == "JPN-NPA" and receipt.version == 1 and receipt.created
    korean = submit(analyst, draft(title="투자 전 지식재산 공개 요구",
                                   summary="벤처 투자자가 투자 완료 전에 반도체 설계 자료의 공개를 요구한다."))
    other = submit(analyst, draft(title="Unrelated", summary="Nothing to see", observables=[]))

    # By observable, typed as the analyst typed it, in full-width, and in capitals.
    for obs in (
        query_pb2.ObservableQuery(type="company_name", value="ABC商事 株式会社"),
        query_pb2.ObservableQuery(type="company_name", value="ＡＢＣ商事　株式会社"),
        query_pb2.ObservableQuery(type="email", value="PROCUREMENT@abc-trading.EXAMPLE"),
        query_pb2.ObservableQuery(type="hs_code", value="854231"),
        query_pb2.ObservableQuery(value="ｐｒｏｃｕｒｅｍｅｎｔ＠ａｂｃ－ｔｒａｄｉｎｇ．ｅｘａｍｐｌｅ"),  # any type
    ):
        assert ids(search(liaison, observable=obs)) == {receipt.ref.record_id}, obs

    # By text: a two-character Japanese word inside a Japanese title; Korean words in a Korean summary.
    assert ids(search(liaison, text="迂回")) == {receipt.ref.record_id}
    assert ids(search(liaison, text="반도체")) == {korean.ref.record_id}
    assert ids(search(liaison, text="공개")) == {korean.ref.record_id}
    assert ids(search(liaison, text="microcontrollers third")) == {receipt.ref.record_id}
    assert ids(search(liaison, text="nothing")) == {other.ref.record_id}

    # By id; the envelope as stored verifies with the manifest's public key, over its bytes.
    held = liaison.query.Get(query_pb2.GetRequest(ref=receipt.ref), timeout=10).record
    assert held.received_from == "JPN-NPA"
    verify_envelope(held.envelope, "JPN-NPA", federation.manifest)
    record = open_record(held.envelope, federation.manifest)
    assert record.content.title == company.title and record.version == 1

    # And fails to verify after any of: a flipped payload byte, another agency's key, another type.
    flipped = records_pb2.Envelope()
    flipped.CopyFrom(held.envelope)
    flipped.payload = bytes([flipped.payload[0] ^ 0x80]) + flipped.payload[1:]
    with pytest.raises(VerificationError):
        verify_envelope(flipped, "JPN-NPA", federation.manifest)
    with pytest.raises(VerificationError):
        verify_envelope(held.envelope, "USA-DTSF", federation.manifest)
    retyped = records_pb2.Envelope()
    retyped.CopyFrom(held.envelope)
    retyped.payload_type = WITHDRAWAL_TYPE
    with pytest.raises(VerificationError):
        verify_envelope(retyped, "JPN-NPA", federation.manifest)
    assert held.envelope.payload_type == RECORD_TYPE


def test_two_character_japanese_word_finds_japanese_title(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst, liaison = client(federation, jpn, "sato"), client(federation, jpn, "suzuki")
    hit = submit(analyst, draft(title="先端技術の流出手口", summary="概要"))
    submit(analyst, draft(title="投資を装う買収", summary="技能実習"))  # 技 and 術 apart: no match
    assert ids(search(liaison, text="技術")) == {hit.ref.record_id}


def test_concurrent_revisions_of_one_version_one_wins(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    sato, kato = client(federation, jpn, "sato"), client(federation, jpn, "kato")
    receipt = submit(sato)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def revise(c: UserClient, n: int) -> None:
        barrier.wait()
        try:
            c.submission.Revise(submission_pb2.ReviseRequest(
                ref=receipt.ref, base_version=1, draft=draft(title=f"改訂 {n}")), timeout=10)
            outcomes.append("ok")
        except grpc.RpcError as error:
            outcomes.append(error.code().name)

    threads = [threading.Thread(target=revise, args=(sato if i % 2 else kato, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ABORTED"] * 7 + ["ok"]
    versions = [row.version for row in log_entries(jpn.store, "JPN-NPA", receipt.ref.record_id)]
    assert versions == [1, 2]
    # Revising the stale version now is ABORTED too; the current one works.
    with pytest.raises(grpc.RpcError) as stale:
        sato.submission.Revise(submission_pb2.ReviseRequest(ref=receipt.ref, base_version=1, draft=draft()))
    assert stale.value.code() == grpc.StatusCode.ABORTED
    v3 = sato.submission.Revise(submission_pb2.ReviseRequest(ref=receipt.ref, base_version=2, draft=draft())).receipt
    assert v3.version == 3


def test_retraction_is_a_signed_version_and_hides_the_record(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst, liaison = client(federation, jpn, "sato"), client(federation, jpn, "suzuki")
    receipt = submit(analyst, draft(title="撤回される記録"))
    retracted = analyst.submission.Retract(
        submission_pb2.RetractRequest(ref=receipt.ref, base_version=1, reason="source withdrew"), timeout=10).receipt
    assert retracted.version == 2
    held = liaison.query.Get(query_pb2.GetRequest(ref=receipt.ref), timeout=10).record
    record = open_record(held.envelope, federation.manifest)
    assert record.status == records_pb2.STATUS_RETRACTED and record.content.title == ""
    assert record.content.marking.classification == "CONFIDENTIAL"  # routing survives, content does not
    assert receipt.ref.record_id not in ids(search(liaison, text="撤回"))
    assert receipt.ref.record_id in ids(search(liaison, include_retracted=True))
    with pytest.raises(grpc.RpcError) as again:
        analyst.submission.Revise(submission_pb2.ReviseRequest(ref=receipt.ref, base_version=2, draft=draft()))
    assert again.value.code() == grpc.StatusCode.ABORTED


def test_same_reference_twice_yields_one_record(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst = client(federation, jpn, "sato")
    first = submit(analyst, reference="CASE-2025-014")
    second = submit(analyst, draft(title="再送"), reference="CASE-2025-014")
    assert first.created and not second.created
    assert second.ref == first.ref and second.version == 1
    # Another analyst's identical reference is their own record, not a silent merge.
    third = submit(client(federation, jpn, "kato"), reference="CASE-2025-014")
    assert third.created and third.ref != first.ref
    liaison = client(federation, jpn, "suzuki")
    assert len(search(liaison, page_size=100)) == 2


def test_same_reference_concurrently_yields_one_record(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst = client(federation, jpn, "sato")
    barrier = threading.Barrier(6)
    receipts: list[submission_pb2.Receipt] = []

    def go() -> None:
        barrier.wait()
        receipts.append(submit(analyst, reference="BULK-LINE-7"))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.ref.record_id for r in receipts}) == 1
    assert sum(r.created for r in receipts) == 1


def test_another_agencys_analyst_cannot_revise_or_retract(federation: Federation, jpn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    receipt = submit(client(federation, jpn, "sato"), draft(marking=records_pb2.Marking(
        classification="UNCLASSIFIED", releasable_to=["USA-DTSF"], tlp="GREEN")))
    # USA-DTSF's analyst at JPN-NPA's node: refused outright (users only talk to their own node).
    usa_at_jpn = UserClient.of(federation.user_channel(jpn, "USA-DTSF", "jmiller"))
    for call in (
        lambda: usa_at_jpn.submission.Revise(submission_pb2.ReviseRequest(
            ref=receipt.ref, base_version=1, draft=draft()), timeout=10),
        lambda: usa_at_jpn.submission.Retract(submission_pb2.RetractRequest(
            ref=receipt.ref, base_version=1), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # At its own node, which does not hold the record: NOT_FOUND, as for any record it can't see.
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    own = client(federation, usa, "jmiller", "USA-DTSF")
    with pytest.raises(grpc.RpcError) as missing:
        own.submission.Retract(submission_pb2.RetractRequest(ref=receipt.ref, base_version=1), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert [r.version for r in log_entries(jpn.store, "JPN-NPA", receipt.ref.record_id)] == [1]


def test_revising_a_record_the_caller_cannot_see_is_not_found(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    secret = submit(client(federation, jpn, "sato"), draft(marking=records_pb2.Marking(
        classification="SECRET", tlp="AMBER")))
    low = UserClient.of(federation.user_channel(jpn, "JPN-NPA", "ito"))  # liaison, RESTRICTED
    with pytest.raises(grpc.RpcError) as denied:
        low.query.Get(query_pb2.GetRequest(ref=secret.ref), timeout=10)
    with pytest.raises(grpc.RpcError) as absent:
        low.query.Get(query_pb2.GetRequest(ref=records_pb2.RecordRef(
            originator="JPN-NPA", record_id="00000000-0000-4000-8000-000000000000")), timeout=10)
    assert denied.value.code() == absent.value.code() == grpc.StatusCode.NOT_FOUND
    assert denied.value.details() == absent.value.details()


def test_clearance_below_classification_hides_record(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst = client(federation, jpn, "sato")
    secret = submit(analyst, draft(title="秘密の技術流出", marking=records_pb2.Marking(
        classification="SECRET", tlp="AMBER")))
    restricted = submit(analyst, draft(title="限定の技術流出", marking=records_pb2.Marking(
        classification="RESTRICTED", tlp="GREEN")))
    high, low = client(federation, jpn, "suzuki"), client(federation, jpn, "ito")
    assert ids(search(high, text="技術")) == {secret.ref.record_id, restricted.ref.record_id}
    assert ids(search(low, text="技術")) == {restricted.ref.record_id}
    with pytest.raises(grpc.RpcError) as hidden:
        low.query.Get(query_pb2.GetRequest(ref=secret.ref), timeout=10)
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


def test_pagination_counts_only_what_the_caller_may_see(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    analyst = client(federation, jpn, "sato")
    visible = set()
    for i in range(7):
        classification = "RESTRICTED" if i % 2 == 0 else "SECRET"
        r = submit(analyst, draft(title=f"頁送り {i}", marking=records_pb2.Marking(
            classification=classification, tlp="GREEN")))
        if classification == "RESTRICTED":
            visible.add(r.ref.record_id)
    low = client(federation, jpn, "ito")
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = low.query.Search(query_pb2.SearchRequest(text="頁送り", page_size=2, page_token=token))
        pages += 1
        seen += [records_pb2.Record.FromString(h.envelope.payload).ref.record_id for h in response.records]
        assert len(response.records) == 2 or not response.next_page_token
        token = response.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(visible) and pages == 2
    # A token is bound to the caller and the query: replaying it elsewhere is refused.
    first = low.query.Search(query_pb2.SearchRequest(text="頁送り", page_size=2))
    high = client(federation, jpn, "suzuki")
    with pytest.raises(grpc.RpcError) as foreign:
        high.query.Search(query_pb2.SearchRequest(text="頁送り", page_size=2, page_token=first.next_page_token))
    assert foreign.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (foreign.value.details() or "")


def test_roles_are_checked_on_every_rpc(federation: Federation, jpn) -> None:  # type: ignore[no-untyped-def]
    liaison = client(federation, jpn, "suzuki")
    with pytest.raises(grpc.RpcError) as submit_denied:
        submit(liaison)
    assert submit_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    analyst_channel = federation.user_channel(jpn, "JPN-NPA", "sato")
    pull = sync_pb2_grpc.SyncServiceStub(analyst_channel).Pull(sync_pb2.PullRequest(), timeout=10)
    with pytest.raises(grpc.RpcError) as pull_denied:
        list(pull)
    assert pull_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as digest_denied:
        sync_pb2_grpc.SyncServiceStub(analyst_channel).Digest(sync_pb2.DigestRequest(), timeout=10)
    assert digest_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # A partner node may not submit or query as if it were a user.
    key, cert = (federation.pki_dir / "USA-DTSF" / "node.key").read_bytes(), (
        federation.pki_dir / "USA-DTSF" / "node.crt").read_bytes()
    partner = UserClient.of(federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert))
    for call in (lambda: submit(partner), lambda: partner.query.Search(query_pb2.SearchRequest(), timeout=10)):
        with pytest.raises(grpc.RpcError) as node_denied:
            call()
        assert node_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
