"""``exchange export``: every record matching the filters, as JSON Lines, CSV or a STIX 2.1
bundle (with each record's signed envelope, see exchange.stix), to a file or stdout.

The export is a client of Search: it holds exactly what the one disclosure decision
released to the caller, whatever the format.

A file is written beside its target and renamed over it at the end, so a failed
export leaves no partial file, and it is never readable by others (mode 0600).
``--out -`` writes to standard output; the closing banner then goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from google.protobuf.json_format import MessageToDict

from exchange.cli.calls import decode
from exchange.cli.options import Commands, Parser, client_from
from exchange.cli.progress import Bar, progress_flag
from exchange.cli.query import RECORD_COLUMNS, record_cells, search_filters, search_request
from exchange.errors import InvalidInput
from exchange.render import EXPIRED, Shown, banner, clean, validity_state
from exchange.stix.bundle import make_bundle
from exchange.v1 import query_pb2, records_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = ["export_line", "register"]

EXPORT_FORMATS = {"jsonl": ".jsonl", "csv": ".csv", "stix21": ".json"}
EXPORT_COLUMNS = (*RECORD_COLUMNS, "received_at")


def register(commands: Commands, connection: Parser) -> None:
    export = commands.add_parser(
        "export", parents=[connection, search_filters()],
        help="write query results to a JSON Lines, CSV or STIX 2.1 file",
        description="Every record matching the filters (as for `query`, all pages): JSON Lines (one object a "
                    "line, the whole record), CSV (one row a record, its main fields) or a STIX 2.1 bundle "
                    "(each record's objects with its originator's signed envelope; check it with `verify`).",
    )
    export.add_argument("--out", metavar="FILE", required=True,
                        help="the file to write (mode 0600), named *.jsonl, *.csv or *.json as --format; - for stdout")
    export.add_argument("--format", choices=list(EXPORT_FORMATS), default="jsonl",
                        help="jsonl (default), csv or stix21")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    progress_flag(export)
    export.set_defaults(handler=run_export)


def export_line(held: records_pb2.HeldRecord, record: records_pb2.Record) -> str:
    """One record as one line of JSON: the record, its originator, who sent it, when, and the flag."""
    data = MessageToDict(record, preserving_proto_field_name=True)
    data["originator"] = record.ref.originator
    data["received_from"] = held.received_from
    data["received_at"] = held.received_at.ToJsonString()
    data["equivocated"] = held.equivocated
    data["expired"] = validity_state(record) == EXPIRED
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _search_pages(client: Client, request: query_pb2.SearchRequest) -> Iterator[records_pb2.HeldRecord]:
    request.page_size = 0  # every record is written: the node's default page size
    while True:
        answer = client.call(client.search, request)
        yield from answer.records
        if not answer.next_page_token:
            return
        request.page_token = answer.next_page_token


def _check_out(args: argparse.Namespace) -> Path | None:
    """The file to write (None: stdout); refuses a name whose suffix says another format."""
    if args.out == "-":
        return None
    out = Path(args.out)
    expected = EXPORT_FORMATS[args.format]
    if out.suffix.lower() != expected:
        raise InvalidInput("--out", f"{out} does not end in {expected}, as --format {args.format} writes "
                                    f"(name it *{expected}, or choose the --format its name says)")
    if out.exists() and not args.force:
        raise InvalidInput("--out", f"{out} exists (use --force to replace it)")
    return out


class _Writer:
    """Writes records in the chosen format and keeps what the closing banner needs."""

    def __init__(self, sink: TextIO, fmt: str) -> None:
        self._sink = sink
        self._csv = csv.writer(sink, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(EXPORT_COLUMNS)
        # A bundle is one JSON object: its records are kept and written by finish().
        self._stix: list[tuple[records_pb2.Record, records_pb2.Envelope]] | None = [] if fmt == "stix21" else None
        self.count = 0
        self.markings: dict[bytes, records_pb2.Record] = {}  # one per distinct (originator, marking)

    def write(self, held: records_pb2.HeldRecord, shown: Shown) -> None:
        record = shown.record
        if self._stix is not None:
            if record.status == records_pb2.STATUS_RETRACTED:
                return  # a retraction has no content to map (search shows them only with --include-retracted)
            self._stix.append((record, held.envelope))
        elif self._csv is not None:
            self._csv.writerow([*record_cells(shown), held.received_at.ToJsonString()])
        else:
            self._sink.write(export_line(held, record) + "\n")
        self.count += 1
        key = records_pb2.Record(
            ref=records_pb2.RecordRef(originator=record.ref.originator),
            content=records_pb2.RecordDraft(marking=record.content.marking),
        )
        self.markings.setdefault(key.SerializeToString(deterministic=True), key)

    def finish(self) -> None:
        if self._stix is not None:
            json.dump(make_bundle(self._stix), self._sink, ensure_ascii=False, indent=1)
            self._sink.write("\n")


def _export(args: argparse.Namespace, sink: TextIO) -> _Writer:
    writer = _Writer(sink, args.format)
    request = search_request(args)
    with client_from(args) as client, Bar("exporting", "records", None, force=args.progress) as bar:
        for held in _search_pages(client, request):
            writer.write(held, decode(held, client))
            bar.update(writer.count)
    writer.finish()
    return writer


def run_export(args: argparse.Namespace) -> int:
    out = _check_out(args)
    if out is None:
        writer = _export(args, sys.stdout)
        sys.stdout.flush()
        where, report = "standard output", sys.stderr  # stdout carries the records alone
    else:
        partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as sink:
                writer = _export(args, sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
        where, report = str(out), sys.stdout
    frame = banner(writer.markings.values())
    noun = "record" if writer.count == 1 else "records"
    print("\n".join([frame, clean(f"exported {writer.count} {noun} to {where}"), frame]), file=report)
    return 0
