"""Validity, confidence and word forms, through real nodes: what users are shown of a record's life."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cli.main import main
from exchange.node.server import Node
from exchange.records.envelope import RECORD_TYPE, Signer, content_hash
from exchange.render import EXPIRED, validity_state
from exchange.store import SearchFilter, Store
from exchange.store.integrity import Integrity
from exchange.store.received import Incoming, apply_batch
from exchange.store.refusals import Refusal
from exchange.store.search import search
from exchange.store.store import now_us
from exchange.v1 import liaison_pb2, liaison_pb2_grpc, query_pb2, records_pb2, submission_pb2
from tests.backends import Backend
from tests.federation import Federation, UserClient, draft
from tests.fill import make_record

COMPANY = "Kestrel Components Ltd"
TO_PARTNERS = records_pb2.Marking(classification="CONFIDENTIAL", releasable_to=["USA-DTSF"], tlp="AMBER")


def _time(iso: str) -> Timestamp:
    stamp = Timestamp()
    stamp.FromJsonString(iso)
    return stamp


def _user(federation: Federation, node: Node, handle: str) -> UserClient:
    return UserClient.of(federation.user_channel(node, node.config.agency, handle))


def _submit(analyst: UserClient, title: str, **overrides: Any) -> str:
    d = draft(title=title, summary="", marking=TO_PARTNERS,
              observables=[records_pb2.Observable(type="company_name", value=COMPANY)], **overrides)
    return str(analyst.submission.Submit(submission_pb2.SubmitRequest(draft=d), timeout=10).receipt.ref.record_id)


def _search(user: UserClient, **kwargs: Any) -> query_pb2.SearchResponse:
    return user.query.Search(query_pb2.SearchRequest(**kwargs), timeout=10)


def _ids(response: Any) -> set[str]:
    held = response.records if hasattr(response, "records") else [h.record for h in response.hits]
    return {records_pb2.Record.FromString(h.envelope.payload).ref.record_id for h in held}


def _profile(federation: Federation, agency: str, handle: str) -> list[str]:
    return ["--profile", str(federation.pki_dir / agency / "users" / f"{handle}.profile.toml")]


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(backend.migrated(tmp_path / "node"), agency="JPN-NPA", seal=Integrity(b"\x01" * 32))
    yield opened
    opened.close()


@pytest.fixture
def nodes(federation: Federation, tmp_path: Path) -> tuple[Node, Node, dict[str, str]]:
    """JPN-NPA holding four records released to USA-DTSF (one expired, one not yet valid,
    one of low confidence, one plain), and USA-DTSF having pulled them."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    sato = _user(federation, jpn, "sato")
    made = {
        "expired": _submit(sato, "Expired front company", validity=records_pb2.Validity(
            not_before=_time("2020-01-01T00:00:00Z"), not_after=_time("2021-12-31T00:00:00Z"))),
        "future": _submit(sato, "Future front company",
                          validity=records_pb2.Validity(not_before=_time("2099-01-01T00:00:00Z"))),
        "doubtful": _submit(sato, "Doubtful front company", confidence=20),
        "current": _submit(sato, "Current front company", confidence=90, validity=records_pb2.Validity(
            not_after=_time("2099-12-31T00:00:00Z"))),
    }
    # Sync still carries an expired record: the partner holds all four.
    assert usa.puller.pull("JPN-NPA").applied.stored == 4
    return jpn, usa, made


def test_expired_records_are_hidden_unless_asked_and_a_partner_still_pulls_them(
    federation: Federation, nodes: tuple[Node, Node, dict[str, str]]
) -> None:
    jpn, usa, made = nodes
    unexpired = {made["future"], made["doubtful"], made["current"]}
    for node, handle in ((jpn, "suzuki"), (usa, "rchen")):
        user = _user(federation, node, handle)
        assert _ids(_search(user, text="front company")) == unexpired
        assert _ids(_search(user, text="front company", include_expired=True)) == unexpired | {made["expired"]}
        # Get of an expired record still works.
        ref = records_pb2.RecordRef(originator="JPN-NPA", record_id=made["expired"])
        assert user.query.Get(query_pb2.GetRequest(ref=ref), timeout=10).record.envelope.payload
    # Confidence filters, in SQL and with expiry.
    rchen = _user(federation, usa, "rchen")
    assert _ids(_search(rchen, min_confidence=50)) == {made["future"], made["current"]}
    assert _ids(_search(rchen, min_confidence=80, include_expired=True)) == {made["current"]}
    with pytest.raises(grpc.RpcError) as refused:
        _search(rchen, min_confidence=101)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_confidence" in str(refused.value.details())


def test_a_page_token_binds_the_expiry_and_confidence_filters(
    federation: Federation, nodes: tuple[Node, Node, dict[str, str]]
) -> None:
    jpn, _, _ = nodes
    suzuki = _user(federation, jpn, "suzuki")
    first = _search(suzuki, page_size=1)
    assert first.next_page_token
    for changed in ({"include_expired": True}, {"min_confidence": 10}):
        with pytest.raises(grpc.RpcError) as refused:
            _search(suzuki, page_size=1, page_token=first.next_page_token, **changed)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in str(refused.value.details())
    seen = _ids(first)
    token = first.next_page_token
    while token:  # the same query pages through the three unexpired records
        page = _search(suzuki, page_size=1, page_token=token)
        seen |= _ids(page)
        token = page.next_page_token
    assert len(seen) == 3


def test_watch_hits_leave_out_expired_records_unless_asked(
    federation: Federation, nodes: tuple[Node, Node, dict[str, str]]
) -> None:
    _, usa, made = nodes
    rchen = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(usa, "USA-DTSF", "rchen"))
    rchen.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY), timeout=10)
    hits = rchen.WatchHits(liaison_pb2.WatchHitsRequest(), timeout=10)
    assert _ids(hits) == {made["future"], made["doubtful"], made["current"]}
    hits = rchen.WatchHits(liaison_pb2.WatchHitsRequest(include_expired=True), timeout=10)
    assert _ids(hits) == set(made.values())


def test_the_cli_labels_expired_records(
    federation: Federation, nodes: tuple[Node, Node, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    made = nodes[2]
    profile = _profile(federation, "USA-DTSF", "rchen")
    assert main(["query", "--text", "front company", "--json", *profile]) == 0
    shown = {r["ref"]["record_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(shown) == {made["future"], made["doubtful"], made["current"]}
    assert not any(r["expired"] for r in shown.values())
    assert shown[made["future"]]["not_yet_valid"] and not shown[made["current"]]["not_yet_valid"]

    assert main(["query", "--include-expired", "--json", *profile]) == 0
    expired = {r["ref"]["record_id"]: r["expired"] for r in json.loads(capsys.readouterr().out)}
    assert expired == {made["expired"]: True, made["future"]: False, made["doubtful"]: False,
                       made["current"]: False}
    assert main(["query", "--include-expired", "--min-confidence", "50", *profile]) == 0
    table = capsys.readouterr().out
    assert "[expired] Expired front company" in table and "[not yet valid] Future front company" in table
    assert "Doubtful" not in table and "Current front company" in table

    assert main(["get", f"JPN-NPA/{made['expired']}", *profile]) == 0
    valid = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Valid:")]
    assert valid == ["Valid:         2020-01-01 00:00:00Z to 2021-12-31 00:00:00Z (EXPIRED)"]
    assert main(["get", f"JPN-NPA/{made['expired']}", "--json", *profile]) == 0
    assert json.loads(capsys.readouterr().out)["expired"] is True

    assert main(["watch", "add", "--type", "company_name", COMPANY, *profile]) == 0
    capsys.readouterr()
    assert main(["watch", "hits", "--include-expired", *profile]) == 0
    assert "[expired] Expired front company" in capsys.readouterr().out
    assert main(["watch", "hits", *profile]) == 0
    assert "Expired front company" not in capsys.readouterr().out

    assert main(["export", "--min-confidence", "80", "--include-expired", "--out", "-", *profile]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["ref"]["record_id"], r["expired"]) for r in exported] == [(made["current"], False)]

    assert main(["query", "--min-confidence", "101", *profile]) == 2
    assert "--min-confidence" in capsys.readouterr().err


def test_english_word_forms_meet_and_cjk_two_character_words_still_work(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    sato, suzuki = _user(federation, jpn, "sato"), _user(federation, jpn, "suzuki")
    plural = _submit(sato, "Front company buying microcontrollers and FPGAs")
    singular = _submit(sato, "A microcontroller and an FPGA in one order")
    japanese = _submit(sato, "先端技術の流出手口")
    korean = _submit(sato, "투자 전 지식재산 공개 요구")
    for words in ("microcontroller", "microcontrollers", "FPGA", "FPGAs", "FPGAs Microcontroller"):
        assert _ids(_search(suzuki, text=words)) == {plural, singular}, words
    assert _ids(_search(suzuki, text="technology")) == set()
    assert _ids(_search(suzuki, text="技術")) == {japanese}
    assert _ids(_search(suzuki, text="투자")) == {korean}


# --- the SQL prefilters against the signed records ------------------------------------------

_HOUR = 3_600_000_000  # microseconds
_SIGNER = Signer("JPN-NPA", "JPN-NPA-test", Ed25519PrivateKey.generate())
# A validity bound: none, or some hours before or after the moment of the search.
_BOUND = st.one_of(st.none(), st.integers(-48, 48).filter(bool))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(st.tuples(st.integers(0, 100), _BOUND, _BOUND), min_size=1, max_size=8),
       min_confidence=st.integers(0, 100), include_expired=st.booleans())
def test_the_expiry_and_confidence_prefilters_agree_with_the_signed_records(
    store: Store, drawn: list[tuple[int, int | None, int | None]], min_confidence: int, include_expired: bool
) -> None:
    start = now_us()
    batch: list[Incoming | Refusal] = []
    for i, (confidence, since, until) in enumerate(drawn):
        record = make_record("JPN-NPA", i, TO_PARTNERS)
        record.content.confidence = confidence
        for name, hours in (("not_before", since), ("not_after", until)):
            if hours is not None:
                getattr(record.content.validity, name).FromMicroseconds(start + hours * _HOUR)
        envelope = _SIGNER.seal(RECORD_TYPE, record.SerializeToString())
        batch.append(Incoming(envelope, content_hash(envelope.payload), frozenset({"JPN-NPA"}), record=record))
    apply_batch(store, "JPN-NPA", batch, None)
    now = now_us()
    moment = dt.datetime.fromtimestamp(now / 1e6, dt.UTC)
    criteria = SearchFilter(issued_after=start, min_confidence=min_confidence,
                            expired_before=None if include_expired else now)
    found = {r.record_id for r in search(store, criteria)}
    signed = [records_pb2.Record.FromString(records_pb2.Envelope.FromString(r.envelope).payload)
              for r in search(store, SearchFilter(issued_after=start))]
    expected = {r.ref.record_id for r in signed if r.content.confidence >= min_confidence
                and (include_expired or validity_state(r, moment) != EXPIRED)}
    assert found == expected
