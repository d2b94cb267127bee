"""Malformed submissions get a clear status naming the field; nothing is stored; the node keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from exchange.config import Limits
from exchange.store import audit
from exchange.v1 import query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft

LIMITS = Limits(max_message_bytes=4 * 1024 * 1024, max_record_bytes=16 * 1024, max_observables=1000)


@pytest.fixture
def node(federation: Federation, tmp_path: Path):  # type: ignore[no-untyped-def]
    return federation.start_node("JPN-NPA", tmp_path / "jpn", limits=LIMITS)


def _marking(**kw: object) -> records_pb2.Marking:
    values: dict[str, object] = {"classification": "CONFIDENTIAL", "releasable_to": ["USA-DTSF"], "tlp": "AMBER"}
    values.update(kw)
    return records_pb2.Marking(**values)  # type: ignore[arg-type]


def _obs(n: int) -> list[records_pb2.Observable]:
    return [records_pb2.Observable(type="email", value=f"x{i}@example.com") for i in range(n)]


CASES: list[tuple[str, Callable[[], records_pb2.RecordDraft], grpc.StatusCode, str]] = [
    ("missing title", lambda: draft(title=""), grpc.StatusCode.INVALID_ARGUMENT, "draft.title: missing"),
    ("unknown classification", lambda: draft(marking=_marking(classification="COSMIC")),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.marking.classification"),
    ("unknown caveat", lambda: draft(marking=_marking(caveats=["NOFORN"])),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.marking.caveats[0]"),
    ("non-partner in releasable_to", lambda: draft(marking=_marking(releasable_to=["USA-DTSF", "FRA-DGSI"])),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.marking.releasable_to[1]"),
    ("unknown TLP", lambda: draft(marking=_marking(tlp="WHITE")), grpc.StatusCode.INVALID_ARGUMENT,
     "draft.marking.tlp"),
    ("missing marking", lambda: records_pb2.RecordDraft(kind=records_pb2.KIND_ACTOR, title="t"),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.marking: missing"),
    ("bad observable", lambda: draft(observables=[records_pb2.Observable(type="phone", value="03-1234")]),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.observables[0]"),
    ("unknown observable type", lambda: draft(observables=[records_pb2.Observable(type="aura", value="x")]),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.observables[0]"),
    ("record over the size limit", lambda: draft(summary="長" * 7000), grpc.StatusCode.INVALID_ARGUMENT,
     "over the limit of 16384"),
    ("100,000 observables", lambda: draft(observables=_obs(100_000)), grpc.StatusCode.INVALID_ARGUMENT,
     "draft.observables: 100000 observables"),
    ("validity out of range", lambda: draft(validity=records_pb2.Validity(not_before=Timestamp(seconds=2**62))),
     grpc.StatusCode.INVALID_ARGUMENT, "draft.validity.not_before: out of range"),
]


def _count(node) -> int:  # type: ignore[no-untyped-def]
    with node.store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM log").scalar_one())


@pytest.mark.parametrize(("name", "make", "code", "field"), CASES, ids=[c[0] for c in CASES])
def test_malformed_submission_is_refused_and_nothing_is_stored(
    federation: Federation, node, name: str, make: Callable[[], records_pb2.RecordDraft],  # type: ignore[no-untyped-def]
    code: grpc.StatusCode, field: str,
) -> None:
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    before, audit_before = _count(node), len(audit.read_entries(node.store))
    with pytest.raises(grpc.RpcError) as refused:
        analyst.submission.Submit(submission_pb2.SubmitRequest(draft=make()), timeout=30)
    assert refused.value.code() == code
    assert field in (refused.value.details() or ""), refused.value.details()
    assert _count(node) == before and len(audit.read_entries(node.store)) == audit_before
    # The node keeps serving.
    ok = analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft()), timeout=10).receipt
    assert ok.created


def test_link_to_a_less_releasable_record_is_refused(federation: Federation, node) -> None:  # type: ignore[no-untyped-def]
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    narrow = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(marking=_marking(releasable_to=["USA-DTSF"]))), timeout=10).receipt
    wide = draft(marking=_marking(releasable_to=["USA-DTSF", "KOR-KNPA"]), related=[narrow.ref])
    with pytest.raises(grpc.RpcError) as refused:
        analyst.submission.Submit(submission_pb2.SubmitRequest(draft=wide), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "draft.related[0]" in (refused.value.details() or "")
    # Linking the other way round (narrow -> wide) is fine.
    wide_receipt = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(marking=_marking(releasable_to=["USA-DTSF", "KOR-KNPA"]))), timeout=10).receipt
    linked = analyst.submission.Submit(submission_pb2.SubmitRequest(
        draft=draft(marking=_marking(releasable_to=["USA-DTSF"]), related=[wide_receipt.ref])), timeout=10).receipt
    assert linked.created
    # A link to a record that does not exist names the field too.
    ghost = records_pb2.RecordRef(originator="JPN-NPA", record_id="00000000-0000-4000-8000-000000000001")
    with pytest.raises(grpc.RpcError) as missing:
        analyst.submission.Submit(submission_pb2.SubmitRequest(draft=draft(related=[ghost])), timeout=10)
    assert "draft.related[0]" in (missing.value.details() or "")


def test_invalid_utf8_names_the_field(federation: Federation, node) -> None:  # type: ignore[no-untyped-def]
    channel = federation.user_channel(node, "JPN-NPA", "sato")
    raw_submit = channel.unary_unary(
        "/exchange.v1.SubmissionService/Submit", request_serializer=lambda b: b,
        response_deserializer=submission_pb2.SubmitResponse.FromString,
    )
    good = submission_pb2.SubmitRequest(draft=draft(title="XXXX")).SerializeToString()
    bad = good.replace(b"XXXX", b"X\xff\xfeX")
    before = _count(node)
    with pytest.raises(grpc.RpcError) as refused:
        raw_submit(bad, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "draft.title: invalid UTF-8"
    with pytest.raises(grpc.RpcError) as garbage:
        raw_submit(b"\xff\xff\xff\xff", timeout=10)
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _count(node) == before


def test_oversize_grpc_message_is_resource_exhausted(federation: Federation, node) -> None:  # type: ignore[no-untyped-def]
    analyst = UserClient.of(federation.user_channel(node, "JPN-NPA", "sato"))
    before = _count(node)
    huge = draft(summary="x" * (5 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as refused:
        analyst.submission.Submit(submission_pb2.SubmitRequest(draft=huge), timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.value.details() or "")
    assert _count(node) == before
    assert analyst.query.Search(query_pb2.SearchRequest(), timeout=10) is not None


def test_bad_queries_name_the_field(federation: Federation, node) -> None:  # type: ignore[no-untyped-def]
    liaison = UserClient.of(federation.user_channel(node, "JPN-NPA", "suzuki"))
    for request, field in (
        (query_pb2.SearchRequest(observable=query_pb2.ObservableQuery(type="phone", value="12")), "observable"),
        (query_pb2.SearchRequest(text="技"), "text"),
        (query_pb2.SearchRequest(page_size=100_000), "page_size"),
        (query_pb2.SearchRequest(page_token="not-a-token"), "page_token"),
        (query_pb2.SearchRequest(originators=["nope"]), "originators[0]"),
        (query_pb2.SearchRequest(issued_after=Timestamp(seconds=-(2**62))), "issued_after"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            liaison.query.Search(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(field), refused.value.details()
    with pytest.raises(grpc.RpcError) as bad_ref:
        liaison.query.Get(query_pb2.GetRequest(ref=records_pb2.RecordRef(originator="JPN-NPA",
                                                                         record_id="42")), timeout=10)
    assert bad_ref.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (bad_ref.value.details() or "").startswith("ref.record_id")
