"""Liaison work on real nodes over mutual TLS: pull disclosures, watch lists, export, roles."""

from __future__ import annotations

import functools
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from exchange.cli.main import main
from exchange.config import Limits
from exchange.node.server import Node
from exchange.store import audit
from exchange.v1 import liaison_pb2, liaison_pb2_grpc, query_pb2, records_pb2, submission_pb2
from tests.federation import Federation, UserClient, draft

# One company and one e-mail address, as different agencies type them.
COMPANY = "ABC Trading Co."
COMPANY_FULL_WIDTH = "ＡＢＣ　ＴＲＡＤＩＮＧ　ＣＯ．"
EMAIL = "hiro.talentbridge@example.net"
EMAIL_VARIANT = "Hiro.TalentBridge＠EXAMPLE.NET"


def _marking(rel: list[str], classification: str = "CONFIDENTIAL", tlp: str = "AMBER") -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=rel, tlp=tlp)


def _observables(*pairs: tuple[str, str]) -> list[records_pb2.Observable]:
    return [records_pb2.Observable(type=t, value=v) for t, v in pairs]


def _user(federation: Federation, node: Node, handle: str) -> UserClient:
    return UserClient.of(federation.user_channel(node, node.config.agency, handle))


def _liaison(federation: Federation, node: Node, handle: str) -> liaison_pb2_grpc.LiaisonServiceStub:
    return liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(node, node.config.agency, handle))


def _submit(analyst: UserClient, title: str, marking: records_pb2.Marking,
            observables: list[records_pb2.Observable] | None = None) -> records_pb2.RecordRef:
    extra: dict[str, Any] = {} if observables is None else {"observables": observables}
    request = submission_pb2.SubmitRequest(draft=draft(title=title, marking=marking, **extra))
    return analyst.submission.Submit(request, timeout=10).receipt.ref


def _hits(stub: liaison_pb2_grpc.LiaisonServiceStub, **kwargs: Any) -> list[liaison_pb2.WatchHit]:
    return list(stub.WatchHits(liaison_pb2.WatchHitsRequest(**kwargs), timeout=10).hits)


def _hit_ids(hits: list[liaison_pb2.WatchHit]) -> list[str]:
    return [records_pb2.Record.FromString(h.record.envelope.payload).ref.record_id for h in hits]


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _profile(federation: Federation, agency: str, handle: str) -> str:
    return str(federation.pki_dir / agency / "users" / f"{handle}.profile.toml")


# --- watch list -----------------------------------------------------------------------------


def test_a_partners_record_matching_a_watch_entry_is_a_hit_once_pulled(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    suzuki, ito = _liaison(federation, jpn, "suzuki"), _liaison(federation, jpn, "ito")  # SECRET, RESTRICTED
    for stub in (suzuki, ito):
        typed = stub.WatchAdd(liaison_pb2.WatchAddRequest(type="company_name", value=COMPANY), timeout=10)
        any_type = stub.WatchAdd(liaison_pb2.WatchAddRequest(value=EMAIL), timeout=10)
        assert (typed.created, typed.entry.id, any_type.entry.id) == (True, 1, 2)  # ids are per user
        assert ("company_name", "abc trading co.") in {(k.type, k.value) for k in typed.entry.keys}
        assert ("email", EMAIL) in {(k.type, k.value) for k in any_type.entry.keys}
    # The own agency's record with the same company is never a hit.
    own = _submit(_user(federation, jpn, "sato"), "自社の記録", _marking(["USA-DTSF"]),
                  _observables(("company_name", COMPANY)))
    usa_analyst = _user(federation, usa, "jmiller")
    low = _submit(usa_analyst, "front company", _marking(["JPN-NPA"], "RESTRICTED"),
                  _observables(("company_name", COMPANY_FULL_WIDTH)))
    _submit(usa_analyst, "not for JPN", _marking(["KOR-KNPA"]), _observables(("company_name", COMPANY)))
    assert _hits(suzuki) == []  # not before it arrives
    before_pull = time.time()
    assert jpn.puller.pull("USA-DTSF").applied.stored == 1
    hits = _hits(suzuki)
    assert _hit_ids(hits) == [low.record_id] and list(hits[0].watch_ids) == [1]
    assert hits[0].record.received_from == "USA-DTSF"
    assert hits[0].record.received_at.ToMicroseconds() >= int(before_pull * 1e6)

    high = _submit(usa_analyst, "SNS approach", _marking(["JPN-NPA"], "SECRET"),
                   _observables(("email", EMAIL_VARIANT), ("company_name", "ａｂｃ trading CO.")))
    assert jpn.puller.pull("USA-DTSF").applied.stored == 1
    hits = _hits(suzuki)
    assert _hit_ids(hits) == [high.record_id, low.record_id]  # newest received first
    assert list(hits[0].watch_ids) == [1, 2]
    # Through the decision: ito (RESTRICTED) does not see the SECRET record, or learn of it.
    assert _hit_ids(_hits(ito)) == [low.record_id]
    page = ito.WatchHits(liaison_pb2.WatchHitsRequest(page_size=1), timeout=10)
    assert len(page.hits) == 1 and page.next_page_token == ""
    # Paged, with tokens bound to the caller.
    first = suzuki.WatchHits(liaison_pb2.WatchHitsRequest(page_size=1), timeout=10)
    assert _hit_ids(list(first.hits)) == [high.record_id] and first.next_page_token
    second = suzuki.WatchHits(liaison_pb2.WatchHitsRequest(page_size=1, page_token=first.next_page_token),
                              timeout=10)
    assert _hit_ids(list(second.hits)) == [low.record_id] and second.next_page_token == ""
    foreign = _refused(lambda: ito.WatchHits(liaison_pb2.WatchHitsRequest(page_token=first.next_page_token)))
    assert foreign.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in (foreign.details() or "")
    # Each page shown is audited as a disclosure to the caller.
    def audited(handle: str) -> list[list[object]]:
        entries = audit.read_entries(jpn.store, "watch_hits")
        return [r for e in entries if e.actor == f"urn:exchange:JPN-NPA:user:{handle}" for r in e.detail["records"]]

    assert ["USA-DTSF", high.record_id, 1] in audited("suzuki") and ["USA-DTSF", low.record_id, 1] in audited("suzuki")
    assert ["JPN-NPA", own.record_id, 1] not in audited("suzuki")
    assert ["USA-DTSF", high.record_id, 1] not in audited("ito")
    # Removing the entries ends the hits.
    for entry_id in (1, 2):
        suzuki.WatchRemove(liaison_pb2.WatchRemoveRequest(id=entry_id), timeout=10)
    assert _hits(suzuki) == [] and list(suzuki.WatchList(liaison_pb2.WatchListRequest()).entries) == []
    assert len(ito.WatchList(liaison_pb2.WatchListRequest()).entries) == 2  # another user's list is untouched


def test_watch_entries_are_checked_and_kept_per_user(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    suzuki, ito = _liaison(federation, jpn, "suzuki"), _liaison(federation, jpn, "ito")
    first = suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="platform_handle", value="@Recruit_Tanaka"))
    again = suzuki.WatchAdd(liaison_pb2.WatchAddRequest(type="platform_handle", value="＠ＲＥＣＲＵＩＴ_tanaka"))
    assert first.created and not again.created and again.entry.id == first.entry.id
    for request, field in (
        (liaison_pb2.WatchAddRequest(type="shoe_size", value="42"), "type"),
        (liaison_pb2.WatchAddRequest(type="email", value="not an address"), "value"),
        (liaison_pb2.WatchAddRequest(type="email", value=""), "value"),
        (liaison_pb2.WatchAddRequest(value="   "), "value"),
    ):
        error = _refused(functools.partial(suzuki.WatchAdd, request, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith(f"{field}: "), error.details()
    missing_id = _refused(lambda: suzuki.WatchRemove(liaison_pb2.WatchRemoveRequest(), timeout=10))
    assert missing_id.code() == grpc.StatusCode.INVALID_ARGUMENT and (missing_id.details() or "").startswith("id: ")
    # Another user's entry is not found, and stays.
    other = _refused(lambda: ito.WatchRemove(liaison_pb2.WatchRemoveRequest(id=first.entry.id), timeout=10))
    assert other.code() == grpc.StatusCode.NOT_FOUND
    assert [e.id for e in suzuki.WatchList(liaison_pb2.WatchListRequest()).entries] == [first.entry.id]


def test_watch_commands(federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    profile = ["--profile", _profile(federation, "JPN-NPA", "suzuki")]
    assert main(["watch", "add", "--type", "company_name", COMPANY, *profile]) == 0
    assert "watching company_name 'ABC Trading Co.' as #1" in capsys.readouterr().out
    assert main(["watch", "add", "--value", EMAIL, *profile]) == 0
    assert "as #2" in capsys.readouterr().out
    assert main(["watch", "add", COMPANY, *profile]) == 2
    assert capsys.readouterr().err == "exchange: give --type TYPE VALUE, or --value VALUE for any type\n"
    assert main(["watch", "add", "--type", "shoe_size", "42", *profile]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exchange: argument --type: unknown observable type 'shoe_size' (one of: address,")
    assert err.count("\n") == 1
    ref = _submit(_user(federation, usa, "jmiller"), "フロント企業", _marking(["JPN-NPA"]),
                  _observables(("company_name", COMPANY_FULL_WIDTH)))
    jpn.puller.pull("USA-DTSF")
    assert main(["watch", "hits", *profile]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[-1] == "==== CONFIDENTIAL // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ===="
    assert "USA-DTSF" in out[2] and ref.record_id[:8] in out[2] and out[2].endswith("#1")
    assert main(["watch", "hits", "--json", *profile]) == 0
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["ref"]["record_id"] == ref.record_id and hit["received_from"] == "USA-DTSF"
    assert hit["watch_ids"] == [1] and hit["received_at"].endswith("Z")
    assert main(["watch", "list", *profile]) == 0
    listing = capsys.readouterr().out
    assert "#1" in listing and "company_name=abc trading co." in listing and "(any)" in listing
    assert main(["watch", "remove", "1", *profile]) == 0
    assert capsys.readouterr().out == "removed watch entry #1\n"
    assert main(["watch", "remove", "1", *profile]) == 1
    assert capsys.readouterr().err == "exchange: watch entry #1 not found\n"


# --- disclosures ----------------------------------------------------------------------------


def test_disclosures_list_the_partners_that_pulled_a_record_and_when(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    kor = federation.start_node("KOR-KNPA", tmp_path / "kor")
    gbr = federation.start_node("GBR-NPSA", tmp_path / "gbr")
    sato = _user(federation, jpn, "sato")
    ref = _submit(sato, "第三国経由の迂回輸出", _marking(["USA-DTSF", "KOR-KNPA"]))
    secret = _submit(sato, "秘", _marking(["USA-DTSF"], "SECRET"))
    start = time.time()
    assert usa.puller.pull("JPN-NPA").applied.stored == 2
    assert kor.puller.pull("JPN-NPA").applied.stored == 1
    assert gbr.puller.pull("JPN-NPA").applied.stored == 0  # may not receive it: not listed
    end = time.time()

    suzuki = _liaison(federation, jpn, "suzuki")
    answer = suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
    assert sorted((d.partner, d.version, d.withdrawal) for d in answer.disclosures) == [
        ("KOR-KNPA", 1, False), ("USA-DTSF", 1, False)]
    assert all(start * 1e6 <= d.at.ToMicroseconds() <= end * 1e6 for d in answer.disclosures)
    assert answer.current_version == 1 and answer.marking.classification == "CONFIDENTIAL"
    assert not answer.truncated
    # The audit log holds one pull entry per batch, partner by partner.
    pulls = audit.read_entries(jpn.store, "pull")
    assert [(e.actor, e.detail["partner"]) for e in pulls] == [
        ("urn:exchange:USA-DTSF:node", "USA-DTSF"), ("urn:exchange:KOR-KNPA:node", "KOR-KNPA")]
    assert sorted(map(tuple, pulls[0].detail["records"])) == sorted(
        [("JPN-NPA", ref.record_id, 1), ("JPN-NPA", secret.record_id, 1)])
    assert {d.audit_seq for d in answer.disclosures} == {e.seq for e in pulls}  # GBR got nothing: no entry

    # Narrowed: KOR is dropped, so a withdrawal travels to both earlier holders.
    revised = draft(title="第三国経由の迂回輸出", marking=_marking(["USA-DTSF"]))
    sato.submission.Revise(submission_pb2.ReviseRequest(ref=ref, base_version=1, draft=revised), timeout=10)
    usa.puller.pull("JPN-NPA")
    kor.puller.pull("JPN-NPA")
    answer = suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10)
    assert [(d.partner, d.version, d.withdrawal) for d in answer.disclosures] == [
        ("KOR-KNPA", 2, True), ("USA-DTSF", 2, True), ("USA-DTSF", 2, False),
        ("KOR-KNPA", 1, False), ("USA-DTSF", 1, False)]
    assert audit.verify_store(jpn.store) == []

    # A record the caller may not see answers exactly as one that does not exist.
    ito = _liaison(federation, jpn, "ito")  # RESTRICTED
    hidden = _refused(lambda: ito.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10))
    absent_ref = records_pb2.RecordRef(originator="JPN-NPA", record_id="00000000-0000-4000-8000-000000000000")
    absent = _refused(lambda: suzuki.Disclosures(liaison_pb2.DisclosuresRequest(ref=absent_ref), timeout=10))
    assert hidden.code() == absent.code() == grpc.StatusCode.NOT_FOUND
    assert hidden.details() == absent.details()
    malformed = _refused(lambda: suzuki.Disclosures(liaison_pb2.DisclosuresRequest(), timeout=10))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT and (malformed.details() or "").startswith("ref")

    profile = _profile(federation, "JPN-NPA", "suzuki")
    assert main(["disclosures", f"JPN-NPA/{ref.record_id}", "--profile", profile]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == out[-1] == "==== CONFIDENTIAL // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ===="
    assert out[1] == f"Record JPN-NPA/{ref.record_id} (current version 2)"
    assert out[2].split() == ["PARTNER", "VERSION", "SENT", "AUDIT"]
    assert out[3].startswith("KOR-KNPA  below 2 (withdrawal)")
    assert main(["disclosures", f"JPN-NPA/{ref.record_id}", "--profile", _profile(federation, "JPN-NPA", "ito")]) == 1
    assert capsys.readouterr().err == "exchange: record not found\n"


# --- export and --from-partners ------------------------------------------------------------


def test_export_writes_every_matching_record_as_a_json_line_and_is_audited(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", limits=Limits(default_page_size=2))
    sato = _user(federation, jpn, "sato")
    refs = {_submit(sato, f"輸出管理 {i}", _marking(["USA-DTSF"], "RESTRICTED", "GREEN")).record_id
            for i in range(4)}
    refs.add(_submit(sato, "輸出管理 秘", _marking(["USA-DTSF"], "SECRET")).record_id)
    _submit(sato, "無関係", _marking(["USA-DTSF"]))
    out = tmp_path / "export.jsonl"
    profile = ["--profile", _profile(federation, "JPN-NPA", "suzuki")]
    audited_before = len(audit.read_entries(jpn.store))
    assert main(["export", "--text", "輸出管理", "--out", str(out), *profile]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["==== SECRET // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ====",
                       f"exported 5 records to {out}",
                       "==== SECRET // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ===="]
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {line["ref"]["record_id"] for line in lines} == refs and len(lines) == 5
    for line in lines:
        assert line["originator"] == "JPN-NPA" and line["received_from"] == "JPN-NPA"
        assert line["equivocated"] is False and line["received_at"].endswith("Z")
        assert line["content"]["title"].startswith("輸出管理")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # The disclosure is in the audit log: every exported record, in search entries (three pages).
    entries = audit.read_entries(jpn.store)[audited_before:]
    assert {e.action for e in entries} == {"search"} and len(entries) == 3
    assert {r[1] for e in entries for r in e.detail["records"]} == refs
    # An existing file is not replaced without --force; nothing is written for a refused query.
    assert main(["export", "--text", "輸出管理", "--out", str(out), *profile]) == 2
    assert capsys.readouterr().err == f"exchange: --out: {out} exists (use --force to replace it)\n"
    ito = ["--profile", _profile(federation, "JPN-NPA", "ito")]  # RESTRICTED: four records
    assert main(["export", "--text", "輸出管理", "--out", str(out), "--force", *ito]) == 0
    assert "exported 4 records" in capsys.readouterr().out
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    assert main(["export", "--since", "yesterday", "--out", str(tmp_path / "x.jsonl"), *profile]) == 2
    assert not (tmp_path / "x.jsonl").exists() and list(tmp_path.glob(".x.jsonl*")) == []


def test_query_from_partners_leaves_out_the_own_agencys_records(
    federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    own = _submit(_user(federation, jpn, "sato"), "自社", _marking(["USA-DTSF"]), _observables(("email", EMAIL)))
    theirs = _submit(_user(federation, usa, "jmiller"), "partner", _marking(["JPN-NPA"]),
                     _observables(("email", EMAIL_VARIANT)))
    jpn.puller.pull("USA-DTSF")
    suzuki = _user(federation, jpn, "suzuki")
    request = query_pb2.SearchRequest(observable=query_pb2.ObservableQuery(value=EMAIL))
    assert {h.received_from for h in suzuki.query.Search(request, timeout=10).records} == {"JPN-NPA", "USA-DTSF"}
    request.from_partners = True
    [found] = suzuki.query.Search(request, timeout=10).records
    assert records_pb2.Record.FromString(found.envelope.payload).ref.record_id == theirs.record_id
    profile = ["--profile", _profile(federation, "JPN-NPA", "suzuki")]
    assert main(["query", "--value", EMAIL_VARIANT, "--from-partners", "--json", *profile]) == 0
    assert [r["ref"]["record_id"] for r in json.loads(capsys.readouterr().out)] == [theirs.record_id]
    assert main(["query", "--value", EMAIL, "--json", *profile]) == 0
    assert {r["ref"]["record_id"] for r in json.loads(capsys.readouterr().out)} == {own.record_id, theirs.record_id}


# --- roles ----------------------------------------------------------------------------------


def test_partner_nodes_and_analysts_cannot_call_the_liaison_rpcs(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn")
    ref = _submit(_user(federation, jpn, "sato"), "role check", _marking(["USA-DTSF"]))
    key = (federation.pki_dir / "USA-DTSF" / "node.key").read_bytes()
    cert = (federation.pki_dir / "USA-DTSF" / "node.crt").read_bytes()
    partner = liaison_pb2_grpc.LiaisonServiceStub(
        federation.channel(jpn.port, server_agency="JPN-NPA", key=key, cert=cert))
    analyst = liaison_pb2_grpc.LiaisonServiceStub(federation.user_channel(jpn, "JPN-NPA", "sato"))
    calls: list[Callable[[liaison_pb2_grpc.LiaisonServiceStub], object]] = [
        lambda s: s.Disclosures(liaison_pb2.DisclosuresRequest(ref=ref), timeout=10),
        lambda s: s.WatchAdd(liaison_pb2.WatchAddRequest(value=EMAIL), timeout=10),
        lambda s: s.WatchRemove(liaison_pb2.WatchRemoveRequest(id=1), timeout=10),
        lambda s: s.WatchList(liaison_pb2.WatchListRequest(), timeout=10),
        lambda s: s.WatchHits(liaison_pb2.WatchHitsRequest(), timeout=10),
    ]
    for call in calls:
        assert _refused(functools.partial(call, partner)).code() == grpc.StatusCode.PERMISSION_DENIED
    # Disclosures and the watch list are the liaison officer's (docs/design.md's actors table).
    for call in calls:
        assert _refused(functools.partial(call, analyst)).code() == grpc.StatusCode.PERMISSION_DENIED
