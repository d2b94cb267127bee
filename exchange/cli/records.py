"""Analyst commands: ``submit``, ``revise`` and ``retract``."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.json_format import MessageToDict

from exchange.cli.drafts import read_draft
from exchange.cli.options import Commands, Parser, client_from, parse_ref, positive_int
from exchange.cli.render import dumps
from exchange.v1 import submission_pb2

__all__ = ["register"]


def register(commands: Commands, connection: Parser) -> None:
    """Add the analyst commands to ``commands`` (an argparse subparsers object)."""
    submit = commands.add_parser(
        "submit", parents=[connection], help="submit a new record from a JSON draft",
        description="Submit a record draft (JSON; - reads standard input).",
    )
    submit.add_argument("file", metavar="FILE", help="record draft in JSON")
    submit.add_argument("--reference", metavar="REF", help="your reference (overrides the draft's)")
    submit.add_argument("--json", action="store_true", help="print the receipt as JSON")
    submit.set_defaults(handler=run_submit)

    revise = commands.add_parser(
        "revise", parents=[connection], help="issue a new version of one of your agency's records",
    )
    revise.add_argument("ref", metavar="ORIGINATOR/RECORD_ID")
    revise.add_argument("--base-version", metavar="N", type=positive_int, required=True,
                        help="the version you are revising (refused if it is no longer current)")
    revise.add_argument("file", metavar="FILE", help="the complete new draft in JSON")
    revise.add_argument("--json", action="store_true", help="print the receipt as JSON")
    revise.set_defaults(handler=run_revise)

    retract = commands.add_parser(
        "retract", parents=[connection], help="retract one of your agency's records",
    )
    retract.add_argument("ref", metavar="ORIGINATOR/RECORD_ID")
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


def run_submit(args: argparse.Namespace) -> int:
    draft, reference = read_draft(args.file)
    if args.reference is not None:
        reference = args.reference
    request = submission_pb2.SubmitRequest(draft=draft, reference=reference)
    with client_from(args) as client:
        receipt = client.call(client.submit, request)
    if receipt.created:
        text = f"submitted {_name(receipt)} version {receipt.version}"
    else:
        text = f"already submitted as {_name(receipt)} (reference {reference})"
    return _print_receipt(args, receipt, text)


def run_revise(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref)
    draft, _reference = read_draft(args.file)  # a revision keeps the record; a reference names a new one
    request = submission_pb2.ReviseRequest(ref=ref, base_version=args.base_version, draft=draft)
    with client_from(args) as client:
        receipt = client.call(client.revise, request)
    return _print_receipt(args, receipt, f"revised {_name(receipt)} version {receipt.version}")


def run_retract(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref)
    request = submission_pb2.RetractRequest(ref=ref, base_version=args.base_version, reason=args.reason)
    with client_from(args) as client:
        receipt = client.call(client.retract, request)
    return _print_receipt(args, receipt, f"retracted {_name(receipt)} version {receipt.version}")
