"""Liaison commands: ``disclosures``, ``watch`` (add, list, remove, hits) and ``export``.

Like every output for people, what shows records (or facts about one) is
framed by the classification banner of the most sensitive record involved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from exchange.cli.drafts import parse_time
from exchange.cli.options import Commands, Parser, client_from, parse_ref, positive_int
from exchange.cli.query import search_filters, search_request
from exchange.cli.render import (
    NO_RECORDS,
    Shown,
    banner,
    clean,
    display_width,
    dumps,
    fit,
    held_to_json,
    truncate,
)
from exchange.errors import InvalidInput, NotFound, TransportError
from exchange.v1 import liaison_pb2, query_pb2, records_pb2

if TYPE_CHECKING:
    import grpc

    from exchange.client import Client

__all__ = ["LiaisonCalls", "export_line", "register"]

DEFAULT_LIMIT = 50
# As for `query`: never ask for more hits than will be shown, the node audits each.
_PAGE = 50
TITLE_COLUMNS = 40

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def register(commands: Commands, connection: Parser) -> None:
    disclosures = commands.add_parser(
        "disclosures", parents=[connection], help="which partners received a record from your node, and when",
    )
    disclosures.add_argument("ref", metavar="ORIGINATOR/RECORD_ID")
    disclosures.add_argument("--json", action="store_true", help="print JSON instead of text")
    disclosures.set_defaults(handler=run_disclosures)

    watch = commands.add_parser("watch", help="your watch list of observables partners may report")
    watch_commands = watch.add_subparsers(dest="watch_command", metavar="COMMAND", required=True)
    add = watch_commands.add_parser(
        "add", parents=[connection], help="watch an observable",
        description="Watch a value of one observable type (--type TYPE VALUE), or of any type (--value VALUE).",
    )
    add.add_argument("typed_value", metavar="VALUE", nargs="?", help="the value, with --type")
    add.add_argument("--type", metavar="TYPE", help="an observable type, e.g. company_name, email")
    add.add_argument("--value", metavar="VALUE", help="a value to match under every type it is valid for")
    add.add_argument("--json", action="store_true", help="print the entry as JSON")
    add.set_defaults(handler=run_watch_add)

    listing = watch_commands.add_parser("list", parents=[connection], help="show your watch list")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(handler=run_watch_list)

    remove = watch_commands.add_parser("remove", parents=[connection], help="stop watching an entry")
    remove.add_argument("id", metavar="ID", type=positive_int, help="the entry's id (see `exchange watch list`)")
    remove.set_defaults(handler=run_watch_remove)

    hits = watch_commands.add_parser(
        "hits", parents=[connection], help="records partners shared that match your watch list",
        description="Records received from partners with a watched observable, newest received first.",
    )
    hits.add_argument("--since", metavar="ISO8601", help="received at or after (UTC if no zone)")
    hits.add_argument("--limit", metavar="N", type=positive_int, default=DEFAULT_LIMIT,
                      help=f"show at most N records (default {DEFAULT_LIMIT})")
    hits.add_argument("--all", action="store_true", help="show every hit")
    hits.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    hits.set_defaults(handler=run_watch_hits)

    export = commands.add_parser(
        "export", parents=[connection, search_filters()], help="write query results to a JSON Lines file",
        description="Every record matching the filters (as for `query`, all pages), one JSON object a line.",
    )
    export.add_argument("--out", metavar="FILE.jsonl", required=True, help="the file to write (mode 0600)")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.set_defaults(handler=run_export)


# --- calls --------------------------------------------------------------------------------


def _method(channel: grpc.Channel, name: str, request: type[Req], response: type[Resp]) -> Any:
    # The path comes from the descriptors, so it cannot drift from liaison.proto.
    method = liaison_pb2.DESCRIPTOR.services_by_name["LiaisonService"].methods_by_name[name]
    assert method.input_type.full_name == request.DESCRIPTOR.full_name
    assert method.output_type.full_name == response.DESCRIPTOR.full_name
    return channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


class LiaisonCalls:
    """The Liaison service's methods on a client's channel."""

    def __init__(self, client: Client) -> None:
        lp = liaison_pb2
        channel = client.channel
        self.disclosures: grpc.UnaryUnaryMultiCallable[lp.DisclosuresRequest, lp.DisclosuresResponse] = _method(
            channel, "Disclosures", lp.DisclosuresRequest, lp.DisclosuresResponse)
        self.watch_add: grpc.UnaryUnaryMultiCallable[lp.WatchAddRequest, lp.WatchAddResponse] = _method(
            channel, "WatchAdd", lp.WatchAddRequest, lp.WatchAddResponse)
        self.watch_remove: grpc.UnaryUnaryMultiCallable[lp.WatchRemoveRequest, lp.WatchRemoveResponse] = _method(
            channel, "WatchRemove", lp.WatchRemoveRequest, lp.WatchRemoveResponse)
        self.watch_list: grpc.UnaryUnaryMultiCallable[lp.WatchListRequest, lp.WatchListResponse] = _method(
            channel, "WatchList", lp.WatchListRequest, lp.WatchListResponse)
        self.watch_hits: grpc.UnaryUnaryMultiCallable[lp.WatchHitsRequest, lp.WatchHitsResponse] = _method(
            channel, "WatchHits", lp.WatchHitsRequest, lp.WatchHitsResponse)


def _decode(held: records_pb2.HeldRecord, client: Client) -> Shown:
    try:
        return Shown.from_held(held)
    except DecodeError:
        raise TransportError(f"node at {client.address} sent a record that does not parse") from None


def _when(stamp: Any) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return str(stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ"))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[clean(c) for c in row] for row in rows]  # values come from partners and users
    widths = [max(display_width(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return ["  ".join(fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *cells]]


# --- disclosures --------------------------------------------------------------------------


def run_disclosures(args: argparse.Namespace) -> int:
    ref = parse_ref(args.ref)
    with client_from(args) as client:
        answer = client.call(LiaisonCalls(client).disclosures, liaison_pb2.DisclosuresRequest(ref=ref))
    name = f"{ref.originator}/{ref.record_id}"
    if args.json:
        print(dumps({
            "record": name,
            "current_version": answer.current_version,
            "marking": MessageToDict(answer.marking, preserving_proto_field_name=True),
            "disclosures": [
                {"partner": d.partner, "version": d.version, "at": d.at.ToJsonString(),
                 "withdrawal": d.withdrawal, "audit_seq": d.audit_seq}
                for d in answer.disclosures
            ],
            "truncated": answer.truncated,
        }))
    else:
        # Facts about a record carry the record's banner (built from its marking alone).
        frame = banner([records_pb2.Record(ref=ref, content=records_pb2.RecordDraft(marking=answer.marking))])
        lines = [frame, f"Record {name} (current version {answer.current_version})"]
        if not answer.disclosures:
            lines.append("No partner has pulled this record from this node.")
        else:
            rows = [
                [d.partner, f"below {d.version} (withdrawal)" if d.withdrawal else str(d.version), _when(d.at),
                 str(d.audit_seq)]
                for d in answer.disclosures
            ]
            lines += _table(["PARTNER", "VERSION", "SENT", "AUDIT"], rows)
        print("\n".join([*lines, frame]))
    if answer.truncated:
        print(f"exchange: showing the newest {len(answer.disclosures)} disclosures; older ones exist",
              file=sys.stderr)
    return 0


# --- the watch list -----------------------------------------------------------------------


def _watch_request(args: argparse.Namespace) -> liaison_pb2.WatchAddRequest:
    if args.value is not None:
        if args.type is not None or args.typed_value is not None:
            raise InvalidInput("--value", "matches every type: give --value VALUE alone, or --type TYPE VALUE")
        return liaison_pb2.WatchAddRequest(type="", value=args.value)
    if args.type is None or args.typed_value is None:
        raise InvalidInput("", "give --type TYPE VALUE, or --value VALUE for any type")
    return liaison_pb2.WatchAddRequest(type=args.type, value=args.typed_value)


def _entry_json(entry: liaison_pb2.WatchEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "type": entry.type or None,
        "value": entry.value,
        "keys": [{"type": k.type, "value": k.value} for k in entry.keys],
        "created_at": entry.created_at.ToJsonString(),
    }


def _keys_text(entry: liaison_pb2.WatchEntry) -> str:
    return ", ".join(f"{k.type}={k.value}" for k in entry.keys)


def run_watch_add(args: argparse.Namespace) -> int:
    request = _watch_request(args)
    with client_from(args) as client:
        answer = client.call(LiaisonCalls(client).watch_add, request)
    entry = answer.entry
    if args.json:
        print(dumps({**_entry_json(entry), "created": answer.created}))
        return 0
    what = f"{entry.type or 'any type'} {entry.value!r}"
    verb = "watching" if answer.created else "already watching"
    print(clean(f"{verb} {what} as #{entry.id} (matches {_keys_text(entry)})"))
    return 0


def run_watch_list(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        answer = client.call(LiaisonCalls(client).watch_list, liaison_pb2.WatchListRequest())
    if args.json:
        print(dumps([_entry_json(e) for e in answer.entries]))
    elif not answer.entries:
        print("your watch list is empty (add to it with `exchange watch add`)")
    else:
        rows = [
            [f"#{e.id}", e.type or "(any)", truncate(e.value, TITLE_COLUMNS), truncate(_keys_text(e), 60),
             _when(e.created_at)]
            for e in answer.entries
        ]
        print("\n".join(_table(["ID", "TYPE", "VALUE", "MATCHES", "ADDED"], rows)))
    return 0


def run_watch_remove(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        try:
            client.call(LiaisonCalls(client).watch_remove, liaison_pb2.WatchRemoveRequest(id=args.id))
        except NotFound:
            raise NotFound(f"watch entry #{args.id}") from None
    print(f"removed watch entry #{args.id}")
    return 0


def _hits(client: Client, request: liaison_pb2.WatchHitsRequest, limit: int | None
          ) -> tuple[list[liaison_pb2.WatchHit], bool]:
    """Follow pages until ``limit`` hits (None: all); also says whether more matched."""
    calls = LiaisonCalls(client)
    hits: list[liaison_pb2.WatchHit] = []
    while True:
        remaining = None if limit is None else limit - len(hits)
        request.page_size = 0 if remaining is None else min(remaining, _PAGE)
        answer = client.call(calls.watch_hits, request)
        hits.extend(answer.hits)
        if not answer.next_page_token:
            return hits, False
        if limit is not None and len(hits) >= limit:
            return hits, True
        request.page_token = answer.next_page_token


def run_watch_hits(args: argparse.Namespace) -> int:
    request = liaison_pb2.WatchHitsRequest()
    if args.since:
        request.received_after.CopyFrom(parse_time(args.since, "--since", assume_utc=True))
    with client_from(args) as client:
        hits, more = _hits(client, request, None if args.all else args.limit)
        shown = [(_decode(h.record, client), h) for h in hits]
    if args.json:
        print(dumps([
            {**held_to_json(s), "received_at": h.record.received_at.ToJsonString(), "watch_ids": list(h.watch_ids)}
            for s, h in shown
        ]))
    elif not shown:
        print(NO_RECORDS)
    else:
        rows = [
            [_when(h.record.received_at), s.received_from, s.record.ref.originator, s.record.ref.record_id[:8],
             str(s.record.version), s.record.content.marking.classification, s.record.content.marking.tlp,
             truncate(clean(("! " if s.equivocated else "") + s.record.content.title), TITLE_COLUMNS),
             ",".join(f"#{i}" for i in h.watch_ids)]
            for s, h in shown
        ]
        lines = _table(["RECEIVED", "FROM", "ORIGINATOR", "ID", "VER", "CLASSIFICATION", "TLP", "TITLE", "WATCH"],
                       rows)
        if any(s.equivocated for s, _ in shown):
            lines.append("! equivocated: the originator signed two different contents for one version")
        frame = banner([s.record for s, _ in shown])
        print("\n".join([frame, *lines, frame]))
    if more:
        print(f"exchange: showing the newest {len(shown)} hits; more match (use --limit N or --all)",
              file=sys.stderr)
    return 0


# --- export -------------------------------------------------------------------------------


def export_line(held: records_pb2.HeldRecord, record: records_pb2.Record) -> str:
    """One record as one line of JSON: the record, its originator, who sent it, when, and the flag."""
    data = MessageToDict(record, preserving_proto_field_name=True)
    data["originator"] = record.ref.originator
    data["received_from"] = held.received_from
    data["received_at"] = held.received_at.ToJsonString()
    data["equivocated"] = held.equivocated
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _search_pages(client: Client, request: query_pb2.SearchRequest) -> Iterator[records_pb2.HeldRecord]:
    request.page_size = 0  # every record is written: the node's default page size
    while True:
        answer = client.call(client.search, request)
        yield from answer.records
        if not answer.next_page_token:
            return
        request.page_token = answer.next_page_token


def run_export(args: argparse.Namespace) -> int:
    request = search_request(args)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InvalidInput("--out", f"{out} exists (use --force to replace it)")
    # Written beside the target and renamed over it at the end: a failed export leaves no
    # partial file behind, and an export is never readable by others (mode 0600).
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    markings: dict[bytes, records_pb2.Record] = {}  # one per distinct (originator, marking), for the banner
    count = 0
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as sink, client_from(args) as client:
            for held in _search_pages(client, request):
                record = _decode(held, client).record
                sink.write(export_line(held, record) + "\n")
                count += 1
                key = records_pb2.Record(
                    ref=records_pb2.RecordRef(originator=record.ref.originator),
                    content=records_pb2.RecordDraft(marking=record.content.marking),
                )
                markings.setdefault(key.SerializeToString(deterministic=True), key)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    frame = banner(markings.values())
    noun = "record" if count == 1 else "records"
    print("\n".join([frame, clean(f"exported {count} {noun} to {out}"), frame]))
    return 0
