"""``exchange review list | show | approve | reject``: release review.

Analysts list and show their own drafts (a rejected one says why); disclosure officers
list every held draft of the agency within their clearance, show one beside the marking
of the version it changes, and approve or reject it. Output for people is framed by the
banner of the drafts' markings.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from exchange.cli.calls import table, when
from exchange.cli.options import Commands, Parser, client_from
from exchange.errors import InvalidInput
from exchange.render import banner, clean, dumps, marking_text
from exchange.v1 import records_pb2, review_pb2

if TYPE_CHECKING:  # gRPC is imported only once a command connects (exchange/cli/options.py says why)
    from exchange.client import Client

__all__ = ["register"]

_STATE = {review_pb2.DRAFT_STATE_HELD: "held", review_pb2.DRAFT_STATE_RELEASED: "released",
          review_pb2.DRAFT_STATE_REJECTED: "rejected"}


def register(commands: Commands, connection: Parser) -> None:
    review = commands.add_parser("review", parents=[connection],
                                 help="release review: drafts held until a disclosure officer approves them")
    actions = review.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[connection],
                                 help="held drafts (an analyst's own; every draft for a disclosure officer)")
    listing.add_argument("--all", action="store_true", help="released and rejected drafts too")
    listing.add_argument("--json", action="store_true", help="print the drafts as JSON")
    listing.set_defaults(handler=run_list)
    show = actions.add_parser("show", parents=[connection], help="one draft, beside the marking it changes")
    show.add_argument("draft_id", metavar="DRAFT", help="the draft's id (or its first 8 characters)")
    show.add_argument("--json", action="store_true", help="print the draft as JSON")
    show.set_defaults(handler=run_show)
    approve = actions.add_parser("approve", parents=[connection], help="approve a draft (disclosure officers)")
    approve.add_argument("draft_id", metavar="DRAFT", help="the draft's id (or its first 8 characters)")
    approve.set_defaults(handler=run_approve)
    reject = actions.add_parser("reject", parents=[connection], help="reject a draft, saying why (disclosure officers)")
    reject.add_argument("draft_id", metavar="DRAFT", help="the draft's id (or its first 8 characters)")
    reject.add_argument("--reason", metavar="TEXT", required=True, help="why, for the analyst to see")
    reject.set_defaults(handler=run_reject)


def _as_record(draft: review_pb2.HeldDraft) -> records_pb2.Record:
    return records_pb2.Record(ref=draft.ref, content=draft.draft)


def _draft_json(draft: review_pb2.HeldDraft) -> dict[str, Any]:
    data = MessageToDict(draft, preserving_proto_field_name=True)
    data["state"] = _STATE.get(draft.state, "unknown")
    return data


def _resolve(client: Client, given: str) -> str:
    """A whole draft id, or the one held draft (of those the caller sees) that starts with ``given``."""
    if len(given) >= 36:
        return given
    if len(given) < 4:
        raise InvalidInput("DRAFT", "give the draft's id, or at least its first 4 characters")
    drafts = client.call(client.list_drafts, review_pb2.ListDraftsRequest(all=True)).drafts
    matches = [d.draft_id for d in drafts if d.draft_id.startswith(given)]
    if len(matches) != 1:
        found = "no draft" if not matches else f"{len(matches)} drafts ({', '.join(m[:12] for m in matches)})"
        raise InvalidInput("DRAFT", f"{found} you can see starts with {given!r}")
    return matches[0]


def _summary(draft: review_pb2.HeldDraft) -> str:
    state = _STATE.get(draft.state, "unknown")
    if draft.state == review_pb2.DRAFT_STATE_HELD:
        return f"{state}: {len(draft.approvals)} of {draft.approvals_needed} approvals"
    if draft.state == review_pb2.DRAFT_STATE_RELEASED:
        return f"released as version {draft.released_version}"
    return f"rejected: {draft.reason}"


def run_list(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        drafts = client.call(client.list_drafts, review_pb2.ListDraftsRequest(all=args.all)).drafts
    if args.json:
        print(dumps([_draft_json(d) for d in drafts]))
        return 0
    frame = banner([_as_record(d) for d in drafts])
    rows = [[d.draft_id[:8], d.ref.record_id[:8], "new" if not d.base_version else f"v{d.base_version}+1",
             d.author.rsplit(":", 1)[-1], when(d.submitted_at), _summary(d), d.draft.title[:40]] for d in drafts]
    lines = table(["DRAFT", "RECORD", "CHANGE", "AUTHOR", "SUBMITTED", "STATE", "TITLE"], rows) if rows else [
        "No drafts held for review." if not args.all else "No drafts."]
    print("\n".join([frame, *lines, frame]))
    return 0


def _show(draft: review_pb2.HeldDraft) -> str:
    frame = banner([_as_record(draft)])
    lines = [frame, f"Draft {draft.draft_id} by {draft.author}",
             f"Record   {draft.ref.originator}/{draft.ref.record_id} "
             + ("(new)" if not draft.base_version else f"(revises version {draft.base_version})"),
             f"State    {_summary(draft)}",
             f"Needs    {draft.approvals_needed} approval(s): {draft.rule}",
             f"Marking  {marking_text(draft.ref.originator, draft.draft.marking)}"]
    if draft.HasField("released_marking"):
        lines.append(f"Released {marking_text(draft.ref.originator, draft.released_marking)}")
    lines += [f"Approved by {a.officer} at {when(a.at)}" for a in draft.approvals]
    lines += [f"Title    {clean(draft.draft.title)}", f"Summary  {clean(draft.draft.summary)}"]
    lines += [f"  [{clean(t.language)}] {clean(t.title)}" for t in draft.draft.translations]
    return "\n".join([*lines, frame])


def run_show(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        request = review_pb2.GetDraftRequest(draft_id=_resolve(client, args.draft_id))
        draft = client.call(client.get_draft, request).draft
    print(dumps(_draft_json(draft)) if args.json else _show(draft))
    return 0


def run_approve(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        approval = review_pb2.ApproveDraftRequest(draft_id=_resolve(client, args.draft_id))
        answer = client.call(client.approve_draft, approval)
    draft = answer.draft
    if draft.state == review_pb2.DRAFT_STATE_RELEASED:
        print(f"approved and released {draft.ref.originator}/{draft.ref.record_id} version {draft.released_version}")
    else:
        print(f"approved draft {draft.draft_id}: {len(draft.approvals)} of {draft.approvals_needed} approvals "
              f"({draft.rule}); another disclosure officer must approve it")
    return 0


def run_reject(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        request = review_pb2.RejectDraftRequest(draft_id=_resolve(client, args.draft_id), reason=args.reason)
        draft = client.call(client.reject_draft, request).draft
    print(f"rejected draft {draft.draft_id}: {draft.reason}")
    return 0
