"""``exchange disclosures``: which partners received a record from your node, and when.

Like every output for people, the table is framed by the record's classification banner.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from google.protobuf.json_format import MessageToDict

from exchange.cli.calls import liaison_calls, table, when
from exchange.cli.listing import Listing, emit, format_flag
from exchange.cli.options import Commands, Parser, client_from
from exchange.cli.refs import REF_HELP, REF_METAVAR, ref_arg, resolve_ref
from exchange.render import banner, dumps
from exchange.v1 import liaison_pb2, records_pb2

__all__ = ["register"]

COLUMNS = ("record", "partner", "version", "at", "withdrawal", "audit_seq")


def register(commands: Commands, connection: Parser) -> None:
    disclosures = commands.add_parser(
        "disclosures", parents=[connection],
        help="which partners received a record from your node, and when (and who got it through a partner)",
    )
    disclosures.add_argument("ref", metavar=REF_METAVAR, type=ref_arg, help=REF_HELP)
    format_flag(disclosures, json_help="print one JSON object (the record, its marking and the disclosures)")
    disclosures.set_defaults(handler=run_disclosures)


def _rows(name: str, answer: liaison_pb2.DisclosuresResponse) -> list[dict[str, Any]]:
    return [
        {"record": name, "partner": d.partner, "version": d.version, "at": d.at.ToJsonString(),
         "withdrawal": d.withdrawal, "audit_seq": d.audit_seq}
        for d in answer.disclosures
    ]


def _text(ref: records_pb2.RecordRef, name: str, answer: liaison_pb2.DisclosuresResponse) -> list[str]:
    # Facts about a record carry the record's banner (built from its marking alone).
    frame = banner([records_pb2.Record(ref=ref, content=records_pb2.RecordDraft(marking=answer.marking))])
    lines = [frame, f"Record {name} (current version {answer.current_version})"]
    if not answer.disclosures:
        lines.append("No partner has pulled this record from this node.")
    else:
        rows = [
            [d.partner, f"below {d.version} (withdrawal)" if d.withdrawal else str(d.version), when(d.at),
             str(d.audit_seq)]
            for d in answer.disclosures
        ]
        lines += table(["PARTNER", "VERSION", "SENT", "AUDIT"], rows)
    if answer.relayed:
        lines.append("Relayed holders (received the record through a partner):")
        lines += table(["HOLDER", "VIA", "KNOWN FROM", "AT"],
                       [[r.holder, r.via, _source(r), when(r.at)] for r in answer.relayed])
    return [*lines, frame]


def _source(relayed: liaison_pb2.RelayedHolder) -> str:
    return f"reported by {relayed.via}" if relayed.source == "reported" else "this node's audit log"


def _relayed_json(relayed: liaison_pb2.RelayedHolder) -> dict[str, Any]:
    return {"holder": relayed.holder, "via": relayed.via, "source": relayed.source, "at": relayed.at.ToJsonString()}


def run_disclosures(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        ref = resolve_ref(client, args.ref)
        answer = client.call(liaison_calls(client).disclosures, liaison_pb2.DisclosuresRequest(ref=ref))
    name = f"{ref.originator}/{ref.record_id}"
    rows = _rows(name, answer)
    if args.format == "json":
        # One object, as before --format existed: the record's facts and its disclosures.
        print(dumps({
            "record": name,
            "current_version": answer.current_version,
            "marking": MessageToDict(answer.marking, preserving_proto_field_name=True),
            "disclosures": [{k: v for k, v in row.items() if k != "record"} for row in rows],
            "truncated": answer.truncated,
            "relayed": [_relayed_json(r) for r in answer.relayed],
        }))
    else:
        cells = [[row[c] for c in COLUMNS] for row in rows]
        emit(args.format, Listing(rows, COLUMNS, cells, lambda: _text(ref, name, answer)))
    if answer.truncated:
        print(f"exchange: showing the newest {len(answer.disclosures)} disclosures; older ones exist",
              file=sys.stderr)
    return 0
