"""``exchange watch``: add, list, remove, and the hits (records partners shared that match).

Hits show records, so their table is framed by the banner of the most sensitive one.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from exchange.cli.calls import decode, liaison_calls, table, when
from exchange.cli.listing import Listing, emit, format_flag
from exchange.cli.options import OBSERVABLE_TYPES_HELP, Commands, Parser, client_from, observable_type, positive_int
from exchange.cli.query import RECORD_COLUMNS, record_cells
from exchange.cli.refs import REF_HELP, ref_arg, resolve_ref
from exchange.drafts import parse_time
from exchange.errors import InvalidInput, NotFound
from exchange.render import NO_RECORDS, Shown, banner, clean, dumps, held_to_json, truncate
from exchange.v1 import liaison_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = ["register"]

DEFAULT_LIMIT = 50
# As for `query`: never ask for more hits than will be shown, the node audits each.
_PAGE = 50
TITLE_COLUMNS = 40
ENTRY_COLUMNS = ("id", "type", "value", "keys", "created_at")


def register(commands: Commands, connection: Parser) -> None:
    watch = commands.add_parser("watch", help="your watch list of observables partners may report")
    watch_commands = watch.add_subparsers(dest="watch_command", metavar="COMMAND", required=True)
    add = watch_commands.add_parser(
        "add", parents=[connection], help="watch an observable",
        description="Watch a value of one observable type (--type TYPE VALUE), or of any type (--value VALUE). "
                    + OBSERVABLE_TYPES_HELP,
    )
    add.add_argument("typed_value", metavar="VALUE", nargs="?", help="the value, with --type")
    add.add_argument("--type", metavar="TYPE", type=observable_type, help="an observable type, e.g. company_name")
    add.add_argument("--value", metavar="VALUE", help="a value to match under every type it is valid for")
    add.add_argument("--notify", metavar="TARGET",
                     help="push hits to this notify target of your node (node.toml [[notify]]: a command or "
                          "an HTTPS webhook)")
    add.add_argument("--json", action="store_true", help="print the entry as JSON")
    add.set_defaults(handler=run_watch_add)

    listing = watch_commands.add_parser("list", parents=[connection], help="show your watch list")
    format_flag(listing)
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
    hits.add_argument("--include-expired", action="store_true",
                      help="also hits on records whose validity has ended (labelled expired)")
    hits.add_argument("--unseen", action="store_true", help="only hits you have not marked seen")
    format_flag(hits)
    hits.set_defaults(handler=run_watch_hits)

    seen = watch_commands.add_parser("seen", parents=[connection], help="mark hits seen",
                                     description="Mark hits seen (their current versions); a revision is new again.")
    seen.add_argument("refs", metavar="RECORD", nargs="*", type=ref_arg, help=REF_HELP)
    seen.add_argument("--all", action="store_true", help="every current hit")
    seen.set_defaults(handler=run_watch_seen)


def _watch_request(args: argparse.Namespace) -> liaison_pb2.WatchAddRequest:
    if args.value is not None:
        if args.type is not None or args.typed_value is not None:
            raise InvalidInput("--value", "matches every type: give --value VALUE alone, or --type TYPE VALUE")
        return liaison_pb2.WatchAddRequest(type="", value=args.value)
    if args.type is None or args.typed_value is None:
        raise InvalidInput("", "give --type TYPE VALUE, or --value VALUE for any type")
    return liaison_pb2.WatchAddRequest(type=args.type, value=args.typed_value)


def _with_notify(request: liaison_pb2.WatchAddRequest, args: argparse.Namespace) -> liaison_pb2.WatchAddRequest:
    request.notify = args.notify or ""
    return request


def _entry_json(entry: liaison_pb2.WatchEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "type": entry.type or None,
        "value": entry.value,
        "keys": [{"type": k.type, "value": k.value} for k in entry.keys],
        "created_at": entry.created_at.ToJsonString(),
        "notify": entry.notify or None,
    }


def _keys_text(entry: liaison_pb2.WatchEntry) -> str:
    return ", ".join(f"{k.type}={k.value}" for k in entry.keys)


def run_watch_add(args: argparse.Namespace) -> int:
    request = _with_notify(_watch_request(args), args)
    with client_from(args) as client:
        answer = client.call(liaison_calls(client).watch_add, request)
    entry = answer.entry
    if args.json:
        print(dumps({**_entry_json(entry), "created": answer.created}))
        return 0
    what = f"{entry.type or 'any type'} {entry.value!r}"
    verb = "watching" if answer.created else "already watching"
    pushed = f"; hits pushed to {entry.notify}" if entry.notify else ""
    print(clean(f"{verb} {what} as #{entry.id} (matches {_keys_text(entry)}){pushed}"))
    return 0


def run_watch_list(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        answer = client.call(liaison_calls(client).watch_list, liaison_pb2.WatchListRequest())
    entries = list(answer.entries)

    def text() -> list[str]:
        if not entries:
            return ["your watch list is empty (add to it with `exchange watch add`)"]
        rows = [
            [f"#{e.id}", e.type or "(any)", truncate(e.value, TITLE_COLUMNS), truncate(_keys_text(e), 60),
             when(e.created_at)]
            for e in entries
        ]
        return table(["ID", "TYPE", "VALUE", "MATCHES", "ADDED"], rows)

    cells = [[e.id, e.type, e.value, _keys_text(e), e.created_at.ToJsonString()] for e in entries]
    emit(args.format, Listing([_entry_json(e) for e in entries], ENTRY_COLUMNS, cells, text))
    return 0


def run_watch_remove(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        try:
            client.call(liaison_calls(client).watch_remove, liaison_pb2.WatchRemoveRequest(id=args.id))
        except NotFound:
            raise NotFound(f"watch entry #{args.id}") from None
    print(f"removed watch entry #{args.id}")
    return 0


def _hits(client: Client, request: liaison_pb2.WatchHitsRequest, limit: int | None
          ) -> tuple[list[liaison_pb2.WatchHit], bool]:
    """Follow pages until ``limit`` hits (None: all); also says whether more matched."""
    calls = liaison_calls(client)
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


def _hits_table(shown: list[tuple[Shown, liaison_pb2.WatchHit]]) -> list[str]:
    if not shown:
        return [NO_RECORDS]
    rows = [
        [when(h.record.received_at), s.received_from, s.record.ref.originator, s.record.ref.record_id[:8],
         str(s.record.version), s.record.content.marking.classification, s.record.content.marking.tlp,
         truncate(clean(("! " if s.equivocated else "") + ("[expired] " if s.expired else "")
                        + s.record.content.title), TITLE_COLUMNS),
         ",".join(f"#{i}" for i in h.watch_ids)]
        for s, h in shown
    ]
    lines = table(["RECEIVED", "FROM", "ORIGINATOR", "ID", "VER", "CLASSIFICATION", "TLP", "TITLE", "WATCH"], rows)
    if any(s.equivocated for s, _ in shown):
        lines.append("! equivocated: the originator signed two different contents for one version")
    frame = banner([s.record for s, _ in shown])
    return [frame, *lines, frame]


def run_watch_hits(args: argparse.Namespace) -> int:
    request = liaison_pb2.WatchHitsRequest(include_expired=args.include_expired, unseen=args.unseen)
    if args.since:
        request.received_after.CopyFrom(parse_time(args.since, "--since", assume_utc=True))
    with client_from(args) as client:
        hits, more = _hits(client, request, None if args.all else args.limit)
        shown = [(decode(h.record, client), h) for h in hits]
    objects = [
        {**held_to_json(s), "received_at": h.record.received_at.ToJsonString(), "watch_ids": list(h.watch_ids),
         "seen": h.seen}
        for s, h in shown
    ]
    cells = [[*record_cells(s), h.record.received_at.ToJsonString(), " ".join(map(str, h.watch_ids))]
             for s, h in shown]
    columns = (*RECORD_COLUMNS, "received_at", "watch_ids")
    emit(args.format, Listing(objects, columns, cells, lambda: _hits_table(shown)))
    if more:
        print(f"exchange: showing the newest {len(shown)} hits; more match (use --limit N or --all)",
              file=sys.stderr)
    return 0


def run_watch_seen(args: argparse.Namespace) -> int:
    if args.all == bool(args.refs):
        raise InvalidInput("", "name the hits to mark seen (RECORD ...), or give --all")
    with client_from(args) as client:
        refs = [resolve_ref(client, text) for text in args.refs]
        answer = client.call(liaison_calls(client).watch_seen, liaison_pb2.WatchSeenRequest(refs=refs, all=args.all))
    print(f"marked {answer.marked} hit{'s' if answer.marked != 1 else ''} seen")
    return 0
