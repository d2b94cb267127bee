"""Analyst commands: ``submit`` (one draft, or ``--bulk`` for a JSON Lines file), ``revise`` and ``retract``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.json_format import MessageToDict

from exchange.cli.bulk import BATCH, DEFAULT_PARALLEL, run_bulk
from exchange.cli.options import Commands, Parser, client_from, positive_int
from exchange.cli.progress import progress_flag
from exchange.cli.refs import REF_HELP, REF_METAVAR, check_ref, ref_arg, resolve_ref
from exchange.drafts import draft_label, read_draft, read_revision
from exchange.errors import InvalidInput
from exchange.render import dumps
from exchange.v1 import submission_pb2

if TYPE_CHECKING:  # gRPC is imported only once a command connects (see options.client_from)
    import grpc

    from exchange.client import Client

Req = TypeVar("Req", submission_pb2.SubmitRequest, submission_pb2.ReviseRequest)
Resp = TypeVar("Resp", submission_pb2.SubmitResponse, submission_pb2.ReviseResponse)

__all__ = ["register"]


def register(commands: Commands, connection: Parser) -> None:
    """Add the analyst commands to ``commands`` (an argparse subparsers object)."""
    submit = commands.add_parser(
        "submit", parents=[connection], help="submit a new record from a JSON draft",
        description="Submit a record draft (JSON; - reads standard input), or many with --bulk.",
    )
    submit.add_argument("file", metavar="FILE", nargs="?", help="record draft in JSON")
    submit.add_argument("--reference", metavar="REF", help="your reference (overrides the draft's)")
    submit.add_argument("--json", action="store_true", help="print the receipt as JSON")
    bulk = submit.add_argument_group("bulk submission")
    bulk.add_argument("--bulk", metavar="FILE.jsonl",
                      help="one draft per line, each with its own reference (a rerun submits nothing twice)")
    bulk.add_argument("--report", metavar="FILE", help="write each line's outcome to FILE as JSON Lines")
    bulk.add_argument("--parallel", metavar="N", type=positive_int, default=DEFAULT_PARALLEL,
                      help=f"calls of {BATCH} lines in flight at once (default {DEFAULT_PARALLEL})")
    progress_flag(bulk)
    submit.set_defaults(handler=run_submit)

    revise = commands.add_parser(
        "revise", parents=[connection], help="issue a new version of one of your agency's records",
        # argparse would show FILE as optional: both positionals are, to argparse (see main).
        usage="exchange revise [options] [[ORIGINATOR/]ID] FILE",
        description="FILE is the complete new draft, or a record as `exchange get --json` printed it "
                    "(edited): then the record and --base-version default to the file's ref and version "
                    "(given on the command line, they win).",
    )
    revise.add_argument("ref", metavar=REF_METAVAR, nargs="?", help=REF_HELP + " (default: the file's ref)")
    revise.set_defaults(trailing_positionals=True)
    revise.add_argument("--base-version", metavar="N", type=positive_int,
                        help="the version you are revising (refused if it is no longer current; "
                             "default: the file's version)")
    revise.add_argument("file", metavar="FILE", nargs="?",
                        help="the complete new draft in JSON, or `get --json` output")
    revise.add_argument("--json", action="store_true", help="print the receipt as JSON")
    revise.set_defaults(handler=run_revise)

    retract = commands.add_parser(
        "retract", parents=[connection], help="retract one of your agency's records",
    )
    retract.add_argument("ref", metavar=REF_METAVAR, type=ref_arg, help=REF_HELP)
    retract.add_argument("--base-version", metavar="N", type=positive_int, required=True,
                         help="the version you are retracting (refused if it is no longer current)")
    retract.add_argument("--reason", metavar="TEXT", required=True, help="why, for every holder to see")
    retract.add_argument("--json", action="store_true", help="print the receipt as JSON")
    retract.set_defaults(handler=run_retract)


def receipt_json(receipt: submission_pb2.Receipt) -> dict[str, Any]:
    data = MessageToDict(receipt, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    data["content_hash"] = receipt.content_hash.hex()  # hashes are read and compared as hex
    return data


def _print_receipt(args: argparse.Namespace, receipt: submission_pb2.Receipt, text: str) -> int:
    print(dumps(receipt_json(receipt)) if args.json else text)
    return 0


def _name(receipt: submission_pb2.Receipt) -> str:
    return f"{receipt.ref.originator}/{receipt.ref.record_id}"


def _call_with_draft(
    client: Client, fn: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req, file: str
) -> Resp:
    """Make the call; a refusal of the draft's content also names the file it came from."""
    try:
        return client.call(fn, request)
    except InvalidInput as exc:
        # The node names the field ("draft.marking.tlp: ..."), but not the file.
        if str(exc).startswith("draft"):
            raise InvalidInput(f"{draft_label(file)}: {exc.field}" if exc.field else draft_label(file),
                               exc.problem) from None
        raise


def _check_bulk_usage(args: argparse.Namespace) -> None:
    # Usage errors: main reports InvalidInput in one line with exit status 2.
    if args.bulk is None:
        if args.file is None:
            raise InvalidInput("", "give a draft FILE, or --bulk FILE.jsonl (see `exchange submit --help`)")
        if args.report is not None:
            raise InvalidInput("--report", "only with --bulk")
        return
    if args.file is not None:
        raise InvalidInput("", "give either a draft FILE or --bulk FILE.jsonl, not both")
    if args.reference is not None:
        raise InvalidInput("--reference", "not with --bulk: each line carries its own reference")
    if args.json:
        raise InvalidInput("--json", "not with --bulk: use --report FILE for a machine-readable report")


def run_submit(args: argparse.Namespace) -> int:
    _check_bulk_usage(args)
    if args.bulk is not None:
        return run_bulk(args)
    draft, reference = read_draft(args.file)
    if args.reference is not None:
        reference = args.reference
    request = submission_pb2.SubmitRequest(draft=draft, reference=reference)
    with client_from(args) as client:
        receipt = _call_with_draft(client, client.submit, request, args.file).receipt
    if receipt.held_draft_id:
        text = _held_text("submitted", receipt)
    elif receipt.created:
        text = f"submitted {_name(receipt)} version {receipt.version}"
    else:
        text = f"already submitted as {_name(receipt)} (reference {reference})"
    return _print_receipt(args, receipt, text)


def _revise_positionals(args: argparse.Namespace) -> tuple[str | None, str]:
    """``(REF or None, FILE)`` from ``revise [REF] FILE``, wherever the options sat between them."""
    given = [v for v in (args.ref, args.file) if v is not None] + list(getattr(args, "extras", []))
    if len(given) == 1:
        return None, given[0]
    if len(given) == 2:
        return check_ref(given[0]), given[1]
    raise InvalidInput("", "expected [ORIGINATOR/]ID FILE, or FILE alone (see `exchange revise --help`)")


def run_revise(args: argparse.Namespace) -> int:
    args.ref, args.file = _revise_positionals(args)
    file_ref, file_version, draft = read_revision(args.file)
    base_version = args.base_version or file_version  # the command line wins over the file
    if args.ref is None and file_ref is None:  # checked before connecting, so no node is asked in vain
        raise InvalidInput("", "name the record: ORIGINATOR/ID before FILE (FILE is a draft, not `get --json` output)")
    if base_version is None:
        raise InvalidInput("--base-version", "required when FILE is a draft rather than `get --json` output")
    with client_from(args) as client:
        ref = file_ref if args.ref is None else resolve_ref(client, args.ref)
        request = submission_pb2.ReviseRequest(ref=ref, base_version=base_version, draft=draft)
        receipt = _call_with_draft(client, client.revise, request, args.file).receipt
    if receipt.held_draft_id:
        return _print_receipt(args, receipt, _held_text("revised", receipt))
    return _print_receipt(args, receipt, f"revised {_name(receipt)} version {receipt.version}")


def _held_text(done: str, receipt: submission_pb2.Receipt) -> str:
    """A receipt of a draft held for release review: what it will be, and how to follow it."""
    approvals = "approval" if receipt.approvals_needed == 1 else "approvals"
    return (f"{done} {_name(receipt)} version {receipt.version}: held for review as draft "
            f"{receipt.held_draft_id[:8]} until {receipt.approvals_needed} disclosure officer {approvals} "
            f"(exchange review show {receipt.held_draft_id[:8]})")


def run_retract(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        ref = resolve_ref(client, args.ref)
        request = submission_pb2.RetractRequest(ref=ref, base_version=args.base_version, reason=args.reason)
        receipt = client.call(client.retract, request).receipt
    return _print_receipt(args, receipt, f"retracted {_name(receipt)} version {receipt.version}")
