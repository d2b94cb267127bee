"""Release review through real nodes: a held draft reaches no partner by any path until
disclosure officers approve it; the two-person rule for widening; pre-approved markings."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from exchange.cli.main import main
from exchange.config import UserEntry, load_node_config
from exchange.core.identity import Role
from exchange.core.marking import CLASSIFICATIONS, Marking
from exchange.core.review import TLP_ORDER, Preapproval, ReviewPolicy, preapproved, requirement
from exchange.errors import ConfigError
from exchange.node.server import Node
from exchange.store.audit import read_entries, verify_store
from exchange.store.events import security_events
from exchange.store.schema import review_approvals, review_drafts
from exchange.v1 import query_pb2, records_pb2, review_pb2, review_pb2_grpc, submission_pb2, sync_pb2, sync_pb2_grpc
from tests.federation import Federation, UserClient, draft

PARTNERS = ("USA-DTSF", "KOR-KNPA", "GBR-NPSA")
# UNCLASSIFIED//TLP:CLEAR to every partner, and CONFIDENTIAL//TLP:AMBER to USA-DTSF.
POLICY = ReviewPolicy((
    Preapproval(frozenset({"*"}), "UNCLASSIFIED", frozenset({"CLEAR"})),
    Preapproval(frozenset({"USA-DTSF"}), "CONFIDENTIAL", frozenset({"AMBER"})),
))


def _marking(rel: list[str], classification: str = "CONFIDENTIAL", tlp: str = "AMBER") -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=rel, tlp=tlp)


def _analyst(federation: Federation, node: Node, handle: str = "sato") -> UserClient:
    return UserClient.of(federation.user_channel(node, "JPN-NPA", handle))


def _officer(federation: Federation, node: Node, handle: str) -> review_pb2_grpc.ReviewServiceStub:
    return review_pb2_grpc.ReviewServiceStub(federation.user_channel(node, "JPN-NPA", handle))


def _submit(analyst: UserClient, title: str, marking: records_pb2.Marking) -> submission_pb2.Receipt:
    request = submission_pb2.SubmitRequest(draft=draft(title=title, marking=marking))
    return analyst.submission.Submit(request, timeout=10).receipt


def _pulled(federation: Federation, node: Node, partner: str) -> set[str]:
    """The record ids ``partner``'s node is served by a pull from the start, and by a digest listing."""
    channel = federation.node_channel(node, partner)
    stub = sync_pb2_grpc.SyncServiceStub(channel)
    ids = set()
    for batch in stub.Pull(sync_pb2.PullRequest(), timeout=10):
        for envelope in batch.entries:
            if envelope.payload_type.endswith("Record"):
                ids.add(records_pb2.Record.FromString(envelope.payload).ref.record_id)
    listing = stub.Digest(sync_pb2.DigestRequest(originator="JPN-NPA", list_entries=True), timeout=10)
    ids |= {e.record_id for e in listing.entries}
    channel.close()
    return ids


def _searched(federation: Federation, node: Node, agency: str, handle: str) -> set[str]:
    client = UserClient.of(federation.user_channel(node, agency, handle))
    found = client.query.Search(query_pb2.SearchRequest(originators=["JPN-NPA"], page_size=500), timeout=10)
    client.channel.close()
    return {records_pb2.Record.FromString(h.envelope.payload).ref.record_id for h in found.records}


def test_an_unapproved_draft_reaches_no_partner_until_an_officer_approves_it(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    usa = federation.start_node("USA-DTSF", tmp_path / "usa")
    receipt = _submit(_analyst(federation, jpn), "保留中の下書き", _marking(["USA-DTSF", "KOR-KNPA"]))
    assert receipt.held_draft_id and receipt.approvals_needed == 1 and not receipt.content_hash
    rid = receipt.ref.record_id
    # Not by pull, not by digest, to any partner; not in search, on this node or the partner's.
    for partner in PARTNERS:
        assert rid not in _pulled(federation, jpn, partner)
    assert usa.puller.pull("JPN-NPA").applied.stored == 0
    assert rid not in _searched(federation, usa, "USA-DTSF", "rchen")
    assert rid not in _searched(federation, jpn, "JPN-NPA", "suzuki")
    # A partner's user never reaches another agency's node at all (rule 4).
    with pytest.raises(grpc.RpcError) as refused:
        _searched(federation, jpn, "USA-DTSF", "rchen")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as missing:
        _analyst(federation, jpn).query.Get(query_pb2.GetRequest(ref=receipt.ref), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    approved = _officer(federation, jpn, "tanaka").ApproveDraft(
        review_pb2.ApproveDraftRequest(draft_id=receipt.held_draft_id), timeout=10)
    assert approved.draft.state == review_pb2.DRAFT_STATE_RELEASED and approved.receipt.version == 1
    assert approved.receipt.ref.record_id == rid and approved.receipt.content_hash
    assert rid in _pulled(federation, jpn, "USA-DTSF") and rid not in _pulled(federation, jpn, "GBR-NPSA")
    assert usa.puller.pull("JPN-NPA").applied.stored == 1
    assert rid in _searched(federation, usa, "USA-DTSF", "rchen")
    # Audited: who held it, who approved, what was released.
    actions = [(e.action, e.actor) for e in read_entries(jpn.store) if e.detail.get("record_id") == rid]
    assert ("review-hold", "urn:exchange:JPN-NPA:user:sato") in actions
    assert ("review-approve", "urn:exchange:JPN-NPA:user:tanaka") in actions
    release = [e for e in read_entries(jpn.store, "review-release") if e.detail["record_id"] == rid]
    assert release[0].detail["approved_by"] == ["tanaka"] and release[0].detail["author"] == "sato"
    assert verify_store(jpn.store) == []  # the chain, seals and disclosure index hold with review entries


def test_the_author_cannot_approve_their_own_draft_nor_an_analyst_any(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    receipt = _submit(_analyst(federation, jpn), "自己承認", _marking(["KOR-KNPA"]))
    request = review_pb2.ApproveDraftRequest(draft_id=receipt.held_draft_id)
    with pytest.raises(grpc.RpcError) as analyst:
        review_pb2_grpc.ReviewServiceStub(federation.user_channel(jpn, "JPN-NPA", "kato")).ApproveDraft(request)
    assert analyst.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # sato, the author, made a disclosure officer afterwards: still not for their own draft.
    jpn.stop(grace=0)
    federation.nodes.remove(jpn)
    config = federation.node_config("JPN-NPA", tmp_path / "jpn")
    users = {**config.users, "sato": UserEntry("sato", Role.DISCLOSURE_OFFICER, "SECRET")}
    config = dataclasses.replace(config, listen=federation.manifest.partner("JPN-NPA").address, users=users,
                                 review=POLICY)
    again = Node(config, manifest=federation.manifest, schedule=False)
    again.start()
    federation.nodes.append(again)
    with pytest.raises(grpc.RpcError) as own:
        _officer(federation, again, "sato").ApproveDraft(request, timeout=10)
    assert own.value.code() == grpc.StatusCode.PERMISSION_DENIED and "another" in (own.value.details() or "")
    assert receipt.ref.record_id not in _pulled(federation, again, "KOR-KNPA")
    # An officer not cleared for the draft's classification is told it does not exist.
    with pytest.raises(grpc.RpcError) as uncleared:
        _officer(federation, again, "mori").ApproveDraft(request, timeout=10)
    assert uncleared.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_officer_not_cleared_for_the_released_version_cannot_review_its_downgrade(
    federation: Federation, tmp_path: Path
) -> None:
    """Lowering a SECRET record to RESTRICTED is reviewed by officers cleared for what is released
    now, not only for the draft: mori (RESTRICTED) would otherwise approve declassifying content
    they may not read, and see the SECRET record's marking. Told the draft does not exist."""
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    analyst = _analyst(federation, jpn)
    secret = _submit(analyst, "機密", _marking(["USA-DTSF"], classification="SECRET"))
    tanaka, yamada, mori = (_officer(federation, jpn, h) for h in ("tanaka", "yamada", "mori"))
    tanaka.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=secret.held_draft_id), timeout=10)
    lower = draft(title="機密", marking=_marking(["USA-DTSF"], classification="RESTRICTED"))
    held = analyst.submission.Revise(submission_pb2.ReviseRequest(ref=secret.ref, base_version=1, draft=lower),
                                     timeout=10).receipt
    assert held.held_draft_id and held.approvals_needed == 2
    assert held.held_draft_id not in {d.draft_id for d in mori.ListDrafts(review_pb2.ListDraftsRequest(all=True),
                                                                          timeout=10).drafts}
    for call in (lambda: mori.GetDraft(review_pb2.GetDraftRequest(draft_id=held.held_draft_id), timeout=10),
                 lambda: mori.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=held.held_draft_id), timeout=10),
                 lambda: mori.RejectDraft(review_pb2.RejectDraftRequest(draft_id=held.held_draft_id, reason="no"),
                                          timeout=10)):
        with pytest.raises(grpc.RpcError) as hidden:
            call()
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    # Officers cleared for SECRET review it as before.
    tanaka.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=held.held_draft_id), timeout=10)
    done = yamada.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=held.held_draft_id), timeout=10)
    assert done.draft.state == review_pb2.DRAFT_STATE_RELEASED
    # Released, the record is RESTRICTED now: mori may see the draft that made it so.
    assert [d.draft_id for d in mori.ListDrafts(review_pb2.ListDraftsRequest(all=True), timeout=10).drafts] == [
        held.held_draft_id]


def test_widening_needs_two_officers_and_narrowing_takes_effect_at_once(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    analyst = _analyst(federation, jpn)
    first = _submit(analyst, "事前承認", _marking(["USA-DTSF"]))  # pre-approved: released at once
    assert not first.held_draft_id and first.content_hash
    rid = first.ref.record_id
    assert rid in _pulled(federation, jpn, "USA-DTSF")
    wider = draft(title="事前承認", marking=_marking(["USA-DTSF", "KOR-KNPA"]))
    held = analyst.submission.Revise(submission_pb2.ReviseRequest(ref=first.ref, base_version=1, draft=wider)).receipt
    assert held.held_draft_id and held.approvals_needed == 2 and held.version == 2
    tanaka, yamada = _officer(federation, jpn, "tanaka"), _officer(federation, jpn, "yamada")
    one = tanaka.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=held.held_draft_id), timeout=10)
    assert one.draft.state == review_pb2.DRAFT_STATE_HELD and not one.HasField("receipt")
    assert "releasable_to adds KOR-KNPA" in one.draft.rule
    assert list(one.draft.released_marking.releasable_to) == ["USA-DTSF"]
    assert rid not in _pulled(federation, jpn, "KOR-KNPA")  # one approval: still held
    with pytest.raises(grpc.RpcError) as twice:
        tanaka.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=held.held_draft_id), timeout=10)
    assert twice.value.code() == grpc.StatusCode.ABORTED  # the same officer twice is not two
    assert rid not in _pulled(federation, jpn, "KOR-KNPA")
    two = yamada.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=held.held_draft_id), timeout=10)
    assert two.draft.state == review_pb2.DRAFT_STATE_RELEASED and two.receipt.version == 2
    assert rid in _pulled(federation, jpn, "KOR-KNPA")
    release = [e for e in read_entries(jpn.store, "review-release") if e.detail["record_id"] == rid]
    assert release[0].detail["approved_by"] == ["tanaka", "yamada"]
    # Narrowing back (the same content): at once, no review, and KOR-KNPA is withdrawn.
    narrow = draft(title="事前承認", marking=_marking(["USA-DTSF"]))
    third = analyst.submission.Revise(submission_pb2.ReviseRequest(ref=first.ref, base_version=2, draft=narrow))
    assert not third.receipt.held_draft_id and third.receipt.version == 3
    # Lowering the classification is widening too; so is removing a caveat.
    lower = draft(title="事前承認", marking=_marking(["USA-DTSF"], classification="RESTRICTED"))
    fourth = analyst.submission.Revise(submission_pb2.ReviseRequest(ref=first.ref, base_version=3, draft=lower))
    assert fourth.receipt.approvals_needed == 2
    # Retraction: at once.
    retracted = analyst.submission.Retract(submission_pb2.RetractRequest(ref=first.ref, base_version=3, reason="x"))
    assert retracted.receipt.version == 4 and not retracted.receipt.held_draft_id
    # The held widening's base is gone: approving it is refused, nothing released.
    tanaka.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=fourth.receipt.held_draft_id), timeout=10)
    with pytest.raises(grpc.RpcError) as stale:
        yamada.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=fourth.receipt.held_draft_id), timeout=10)
    assert stale.value.code() == grpc.StatusCode.ABORTED


def test_pre_approved_markings_flow_and_a_rejection_tells_the_analyst_why(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    analyst = _analyst(federation, jpn)
    clear = _submit(analyst, "公開", _marking(list(PARTNERS), classification="UNCLASSIFIED", tlp="CLEAR"))
    assert not clear.held_draft_id
    for partner in PARTNERS:
        assert clear.ref.record_id in _pulled(federation, jpn, partner)
    local = _submit(analyst, "内部のみ", _marking([], classification="SECRET", tlp="RED"))
    assert not local.held_draft_id  # released to no partner: nothing to review
    held = _submit(analyst, "却下", _marking(["GBR-NPSA"]))
    rejected = _officer(federation, jpn, "yamada").RejectDraft(
        review_pb2.RejectDraftRequest(draft_id=held.held_draft_id, reason="source not yet cleared"), timeout=10)
    assert rejected.draft.state == review_pb2.DRAFT_STATE_REJECTED
    mine = review_pb2_grpc.ReviewServiceStub(analyst.channel)
    listed = mine.ListDrafts(review_pb2.ListDraftsRequest(all=True), timeout=10).drafts
    assert [(d.draft_id, d.reason) for d in listed] == [(held.held_draft_id, "source not yet cleared")]
    with pytest.raises(grpc.RpcError) as other:  # another analyst does not see sato's drafts
        review_pb2_grpc.ReviewServiceStub(federation.user_channel(jpn, "JPN-NPA", "kato")).GetDraft(
            review_pb2.GetDraftRequest(draft_id=held.held_draft_id), timeout=10)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    assert held.ref.record_id not in _pulled(federation, jpn, "GBR-NPSA")
    assert [e.detail["reason"] for e in read_entries(jpn.store, "review-reject")] == ["source not yet cleared"]


def test_submit_bulk_holds_what_needs_review(federation: Federation, tmp_path: Path) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    analyst = _analyst(federation, jpn)
    request = submission_pb2.SubmitBulkRequest(submissions=[
        submission_pb2.SubmitRequest(draft=draft(title="一括 承認済", marking=_marking(["USA-DTSF"])), reference="b1"),
        submission_pb2.SubmitRequest(draft=draft(title="一括 保留", marking=_marking(["KOR-KNPA"])), reference="b2"),
    ])
    results = analyst.submission.SubmitBulk(request, timeout=10).results
    assert not results[0].receipt.held_draft_id and results[1].receipt.held_draft_id
    assert results[1].receipt.ref.record_id not in _pulled(federation, jpn, "KOR-KNPA")
    again = analyst.submission.SubmitBulk(request, timeout=10).results  # references: no second draft
    assert again[1].receipt.held_draft_id == results[1].receipt.held_draft_id and not again[1].receipt.created
    officer = _officer(federation, jpn, "tanaka")
    assert len(officer.ListDrafts(review_pb2.ListDraftsRequest(), timeout=10).drafts) == 1


def test_concurrent_submissions_of_one_reference_hold_exactly_one_draft(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    request = submission_pb2.SubmitRequest(draft=draft(title="同時 保留", marking=_marking(["KOR-KNPA"])),
                                           reference="same-ref")
    analysts = [_analyst(federation, jpn) for _ in range(8)]
    start = threading.Barrier(len(analysts))

    def submit(analyst: UserClient) -> submission_pb2.Receipt:
        start.wait()  # all at once: each checks the reference before any has held a draft
        return analyst.submission.Submit(request, timeout=20).receipt

    with ThreadPoolExecutor(len(analysts)) as pool:
        receipts = list(pool.map(submit, analysts))
    assert len({r.held_draft_id for r in receipts}) == 1 and receipts[0].held_draft_id
    assert sum(r.created for r in receipts) == 1
    assert len({r.ref.record_id for r in receipts}) == 1
    officer = _officer(federation, jpn, "tanaka")
    assert [d.draft_id for d in officer.ListDrafts(review_pb2.ListDraftsRequest(), timeout=10).drafts] == [
        receipts[0].held_draft_id]
    assert len(read_entries(jpn.store, "review-hold")) == 1
    # The database itself refuses a second held draft of the reference, whatever the caller checked.
    with pytest.raises(IntegrityError), jpn.store.write() as tx:
        row = tx.execute(select(review_drafts)).first()
        assert row is not None
        tx.execute(insert(review_drafts).values({**row._asdict(), "draft_id": "another"}))
    # Once rejected, the reference is free again: a new submission holds a new draft.
    officer.RejectDraft(review_pb2.RejectDraftRequest(draft_id=receipts[0].held_draft_id, reason="no"), timeout=10)
    again = analysts[0].submission.Submit(request, timeout=10).receipt
    assert again.created and again.held_draft_id != receipts[0].held_draft_id


_MARKINGS = st.builds(
    _marking,
    st.lists(st.sampled_from(PARTNERS), unique=True, max_size=3),
    st.sampled_from(["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL"]),
    st.sampled_from(["CLEAR", "GREEN", "AMBER"]),
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(_MARKINGS, st.integers(0, 2)), min_size=1, max_size=5))
def test_no_held_draft_is_ever_served(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[records_pb2.Marking, int]],
) -> None:
    """Whatever is submitted and however many approvals it gets, a partner is served exactly the
    released records the decision gives it, never one still held."""
    jpn = federation.start_node("JPN-NPA", tmp_path_factory.mktemp("jpn"), review=POLICY)
    try:
        analyst = _analyst(federation, jpn)
        officers = [_officer(federation, jpn, "tanaka"), _officer(federation, jpn, "yamada")]
        released: dict[str, records_pb2.Marking] = {}
        held: set[str] = set()
        for i, (marking, approvals) in enumerate(steps):
            receipt = _submit(analyst, f"性質 {i}", marking)
            rid = receipt.ref.record_id
            outcome = review_pb2.DRAFT_STATE_RELEASED if not receipt.held_draft_id else review_pb2.DRAFT_STATE_HELD
            for officer in officers[:approvals]:
                if outcome == review_pb2.DRAFT_STATE_HELD:
                    request = review_pb2.ApproveDraftRequest(draft_id=receipt.held_draft_id)
                    outcome = officer.ApproveDraft(request, timeout=10).draft.state
            if outcome == review_pb2.DRAFT_STATE_RELEASED:
                released[rid] = marking
            else:
                held.add(rid)
            for partner in PARTNERS:
                served = _pulled(federation, jpn, partner)
                assert not served & held
                assert served == {r for r, m in released.items() if partner in m.releasable_to}
    finally:
        jpn.stop(grace=0)
        federation.nodes.remove(jpn)


# --- the rules and their configuration --------------------------------------------------------

_CORE_MARKINGS = st.builds(
    Marking,
    st.sampled_from(["UNCLASSIFIED", "RESTRICTED", "CONFIDENTIAL", "SECRET"]),
    st.frozensets(st.sampled_from(PARTNERS)),
    st.sampled_from(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]),
    st.frozensets(st.just("ORCON")),
)


@given(before=_CORE_MARKINGS, after=_CORE_MARKINGS, same=st.booleans())
def test_a_widening_always_needs_two_approvals_and_nothing_else_does(before: Marking, after: Marking,
                                                                      same: bool) -> None:
    needed = requirement(POLICY, before=before, after=after, same_content=same).approvals
    wider = (bool(after.releasable_to - before.releasable_to) or bool(before.caveats - after.caveats)
             or CLASSIFICATIONS.index(after.classification) < CLASSIFICATIONS.index(before.classification)
             or TLP_ORDER.index(after.tlp) < TLP_ORDER.index(before.tlp))
    assert (needed == 2) == wider
    if not wider and same:
        assert needed == 0  # narrowing (or no change to the marking) takes effect at once
    first = requirement(POLICY, before=None, after=after).approvals
    assert first == (0 if not after.releasable_to or preapproved(POLICY, after) else 1)


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    officers = "".join(f'[[users]]\nhandle = "{h}"\nrole = "disclosure_officer"\nclearance = "SECRET"\n'
                       for h in ("tanaka", "yamada"))
    path.write_text(f'agency = "JPN-NPA"\nlisten = "127.0.0.1:1"\n{officers}{body}', encoding="utf-8")
    return path


def test_the_review_table_is_read_and_checked(tmp_path: Path) -> None:
    config = load_node_config(_config(tmp_path, '[review]\n[[review.preapproved]]\npartners = ["*"]\n'
                                                'max_classification = "UNCLASSIFIED"\ntlp = ["CLEAR"]\n'))
    assert config.review == ReviewPolicy((Preapproval(frozenset({"*"}), "UNCLASSIFIED", frozenset({"CLEAR"})),))
    assert load_node_config(_config(tmp_path, "")).review is None  # no table: released at once
    for body, problem in (
        ('[review]\n[[review.preapproved]]\npartners = ["*"]\nmax_classification = "SECRET"\ntlp = ["WHITE"]\n',
         "review.preapproved[0].tlp"),
        ('[review]\n[[review.preapproved]]\npartners = ["usa"]\nmax_classification = "SECRET"\ntlp = ["CLEAR"]\n',
         "review.preapproved[0].partners"),
        ('[review]\n[[review.preapproved]]\npartners = ["*"]\nmax_classification = "HUSH"\ntlp = ["CLEAR"]\n',
         "review.preapproved[0].max_classification"),
        ('[review]\nauto_approve = true\n', "review.auto_approve: unknown setting"),
    ):
        with pytest.raises(ConfigError, match=re.escape(problem)):
            load_node_config(_config(tmp_path, body))
    lone = tmp_path / "lone.toml"
    lone.write_text('agency = "JPN-NPA"\nlisten = "127.0.0.1:1"\n[[users]]\nhandle = "tanaka"\n'
                    'role = "disclosure_officer"\nclearance = "SECRET"\n[review]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="two-person rule"):
        load_node_config(lone)


def test_the_review_commands(federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)

    def profile(handle: str) -> list[str]:
        return ["--profile", str(federation.pki_dir / "JPN-NPA" / "users" / f"{handle}.profile.toml")]

    def run(args: list[str], status: int = 0) -> str:
        capsys.readouterr()
        assert main(args) == status
        out = capsys.readouterr()
        return out.out if status == 0 else out.err

    file = tmp_path / "draft.json"
    file.write_text(json.dumps({
        "kind": "actor", "title": "審査待ちの商社", "reference": "CASE-7",
        "translations": [{"language": "en", "title": "A trading house awaiting review"}],
        "marking": {"classification": "SECRET", "releasable_to": ["USA-DTSF"], "tlp": "AMBER"},
    }, ensure_ascii=False), encoding="utf-8")
    said = run(["submit", str(file), *profile("sato")])
    assert "held for review as draft" in said and "until 1 disclosure officer approval" in said
    draft_id = said.split("as draft ")[1].split()[0]
    assert draft_id in run(["review", "list", *profile("sato")])
    assert "already submitted" not in run(["submit", str(file), *profile("sato")])  # the same draft again
    listed = run(["review", "list", *profile("tanaka")])
    assert listed.startswith("==== SECRET // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ====")
    assert draft_id in listed and "0 of 1 approvals" in listed and listed.count("審査待ちの商社") == 1
    shown = run(["review", "show", draft_id, *profile("yamada")])
    assert "Needs    1 approval(s): release to partners" in shown and "[en] A trading house" in shown
    refused = run(["review", "approve", draft_id, *profile("sato")], status=1)
    assert refused.startswith("exchange: ") and refused.count("\n") == 1 and "may not call ApproveDraft" in refused
    assert run(["review", "reject", draft_id, *profile("tanaka")], status=2).count("\n") == 1  # --reason required
    released = run(["review", "approve", draft_id, *profile("tanaka")])
    assert released.startswith("approved and released JPN-NPA/") and released.strip().endswith("version 1")
    assert run(["review", "list", *profile("tanaka")]).count("No drafts held for review.") == 1
    assert "released as version 1" in run(["review", "list", "--all", *profile("sato")])
    again = run(["review", "approve", draft_id, *profile("yamada")], status=1)
    assert "is released, not held" in again
    assert "no draft you can see" in run(["review", "show", "ffff", *profile("sato")], status=2)


def test_a_draft_edited_in_the_database_or_a_planted_approval_releases_nothing(
    federation: Federation, tmp_path: Path
) -> None:
    jpn = federation.start_node("JPN-NPA", tmp_path / "jpn", review=POLICY)
    analyst = _analyst(federation, jpn)
    edited = _submit(analyst, "改ざんされる下書き", _marking(["KOR-KNPA"]))
    planted = _submit(analyst, "承認の偽造", _marking(["USA-DTSF", "KOR-KNPA"]))
    wider = draft(title="改ざん", marking=_marking(["USA-DTSF", "KOR-KNPA", "GBR-NPSA"]))
    with jpn.store.write() as tx:
        # An insider widens the held draft after submission...
        tx.execute(update(review_drafts).where(review_drafts.c.draft_id == edited.held_draft_id)
                   .values(draft=wider.SerializeToString()))
        # ...and plants an approval, with a seal made up without the key.
        tx.execute(insert(review_approvals).values(draft_id=planted.held_draft_id, officer="yamada", at=1,
                                                   mac=b"\x00" * 32))
    tanaka = _officer(federation, jpn, "tanaka")
    with pytest.raises(grpc.RpcError) as refused:
        tanaka.ApproveDraft(review_pb2.ApproveDraftRequest(draft_id=edited.held_draft_id), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INTERNAL and "seal" in (refused.value.details() or "")
    listed = {d.draft_id: d for d in tanaka.ListDrafts(review_pb2.ListDraftsRequest(), timeout=10).drafts}
    assert edited.held_draft_id not in listed  # never shown either
    events = [e for e in security_events(jpn.store) if e.kind == "integrity"]
    assert [json.loads(e.detail)["record_id"] for e in events] == [edited.ref.record_id]
    assert list(listed[planted.held_draft_id].approvals) == []  # the planted approval counts for nothing
    for partner in PARTNERS:
        assert not _pulled(federation, jpn, partner) & {edited.ref.record_id, planted.ref.record_id}
