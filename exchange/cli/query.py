"""Reading commands: ``get`` one record, ``query`` many."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from exchange.cli.listing import Listing, emit, format_flag
from exchange.cli.options import (
    OBSERVABLE_TYPE_NAMES,
    Commands,
    Parser,
    check_observable_type,
    client_from,
    positive_int,
)
from exchange.cli.refs import REF_HELP, REF_METAVAR, ref_arg, resolve_ref
from exchange.drafts import KINDS, parse_time
from exchange.errors import InvalidInput, TransportError
from exchange.records.translations import well_formed
from exchange.render import (
    KIND_NAMES,
    NO_RECORDS,
    STATUS_NAMES,
    Shown,
    banner,
    dumps,
    held_to_json,
    record_lines,
    table_lines,
)
from exchange.v1 import query_pb2, records_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = ["fetch", "record_cells", "records_listing", "register", "search_filters", "search_request"]

DEFAULT_LIMIT = 50
# With a limit, never ask for more records than will be shown: the node audits
# every record it discloses, shown or not. Without one, the node's default applies.
_PAGE = 50


def register(commands: Commands, connection: Parser) -> None:
    get = commands.add_parser("get", parents=[connection], help="show one record",
                              description="Show one record; `get --json` output, edited, is what `revise` takes.")
    get.add_argument("ref", metavar=REF_METAVAR, type=ref_arg, help=REF_HELP)
    get.add_argument("--json", action="store_true", help="print JSON (a revision `exchange revise FILE` takes back)")
    language_flag(get)
    get.set_defaults(handler=run_get)

    query = commands.add_parser(
        "query", parents=[connection, search_filters()], help="search the records your node holds",
        description="Filters combine with AND; repeating a filter ORs its values.",
    )
    query.add_argument("--limit", metavar="N", type=positive_int, default=DEFAULT_LIMIT,
                       help=f"show at most N records (default {DEFAULT_LIMIT})")
    query.add_argument("--all", action="store_true", help="show every matching record")
    format_flag(query)
    language_flag(query)
    query.set_defaults(handler=run_query)


def language_flag(parser: Parser) -> None:
    parser.add_argument("--lang", metavar="TAG", type=language_arg, default=None,
                        help="show titles and summaries translated into this language (BCP 47: en, ja, ko) "
                             "where a record carries a translation, the original beside it; default: the "
                             "profile's `language`")


def language_arg(value: str) -> str:
    if not well_formed(value):
        raise argparse.ArgumentTypeError(f"not a BCP 47 language tag: {value!r} (e.g. en, ja, ko)")
    return value


def language_of(args: argparse.Namespace, client: Client) -> str:
    """--lang, else the profile's language, else none (originals only)."""
    given: str | None = getattr(args, "lang", None)
    return given if given is not None else client.language


def confidence_arg(value: str) -> int:
    """--min-confidence: a whole number from 0 to 100."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 100, got {value!r}")
    return number


def search_filters() -> Parser:
    """A parent parser with the search filters ``search_request`` reads (query, export)."""
    parent = Parser(add_help=False)
    group = parent.add_argument_group("filters")
    group.add_argument("--kind", action="append", choices=list(KINDS), default=[])
    group.add_argument("--originator", metavar="CODE", action="append", default=[])
    group.add_argument("--country", metavar="ISO3", action="append", default=[])
    group.add_argument("--sector", metavar="S", action="append", default=[])
    which = group.add_mutually_exclusive_group()
    which.add_argument("--observable", metavar="TYPE=VALUE",
                       help=f"an observable of one type; types: {OBSERVABLE_TYPE_NAMES}")
    which.add_argument("--value", metavar="VALUE", help="an observable value of any type")
    group.add_argument("--text", metavar="TEXT", help="words that must all occur in title or summary")
    group.add_argument("--since", metavar="ISO8601", help="issued at or after (UTC if no zone)")
    group.add_argument("--until", metavar="ISO8601", help="issued before (UTC if no zone)")
    group.add_argument("--from-partners", action="store_true",
                       help="only records other agencies originated (what partners shared)")
    group.add_argument("--include-retracted", action="store_true")
    group.add_argument("--include-expired", action="store_true",
                       help="also records whose validity has ended (labelled expired)")
    group.add_argument("--min-confidence", metavar="N", type=confidence_arg, default=0,
                       help="only records with confidence at least N (0-100)")
    return parent


def _decode(held: records_pb2.HeldRecord, client: Client) -> Shown:
    try:
        return Shown.from_held(held)
    except DecodeError:
        raise TransportError(f"node at {client.address} sent a record that does not parse") from None


def run_get(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        request = query_pb2.GetRequest(ref=resolve_ref(client, args.ref))
        shown = _decode(client.call(client.get, request).record, client)
        language = language_of(args, client)
    if args.json:
        print(dumps(held_to_json(shown, language)))
    else:
        frame = banner([shown.record])
        print("\n".join([frame, *record_lines(shown, language), frame]))
    return 0


def _observable(args: argparse.Namespace) -> query_pb2.ObservableQuery | None:
    if args.value is not None:
        return query_pb2.ObservableQuery(type="", value=args.value)
    if args.observable is None:
        return None
    kind, sep, value = args.observable.partition("=")
    if not sep or not kind or not value:
        raise InvalidInput("--observable", f"expected TYPE=VALUE, got {args.observable!r}")
    return query_pb2.ObservableQuery(type=check_observable_type(kind, "--observable"), value=value)


def search_request(args: argparse.Namespace) -> query_pb2.SearchRequest:
    request = query_pb2.SearchRequest(
        kinds=[KINDS[k] for k in args.kind],
        originators=args.originator,
        countries=args.country,
        sectors=args.sector,
        text=args.text or "",
        include_retracted=args.include_retracted,
        from_partners=args.from_partners,
        include_expired=args.include_expired,
        min_confidence=args.min_confidence,
    )
    observable = _observable(args)
    if observable is not None:
        request.observable.CopyFrom(observable)
    if args.since:
        request.issued_after.CopyFrom(parse_time(args.since, "--since", assume_utc=True))
    if args.until:
        request.issued_before.CopyFrom(parse_time(args.until, "--until", assume_utc=True))
    return request


def fetch(client: Client, request: query_pb2.SearchRequest, limit: int | None) -> tuple[list[Shown], bool]:
    """Follow pages until ``limit`` records (None: all); also says whether more matched."""
    shown: list[Shown] = []
    while True:
        remaining = None if limit is None else limit - len(shown)
        request.page_size = 0 if remaining is None else min(remaining, _PAGE)
        response = client.call(client.search, request)
        page = list(response.records)
        if remaining is not None and len(page) > remaining:
            shown.extend(_decode(h, client) for h in page[:remaining])
            return shown, True
        shown.extend(_decode(h, client) for h in page)
        if not response.next_page_token:
            return shown, False
        if limit is not None and len(shown) >= limit:
            return shown, True
        request.page_token = response.next_page_token


RECORD_COLUMNS = ("originator", "record_id", "version", "status", "kind", "classification", "tlp", "title",
                  "issued_at", "received_from", "equivocated", "expired")


def record_cells(s: Shown) -> list[object]:
    r = s.record
    return [r.ref.originator, r.ref.record_id, r.version, STATUS_NAMES.get(r.status, "unknown"),
            KIND_NAMES.get(r.content.kind, "unknown"), r.content.marking.classification, r.content.marking.tlp,
            r.content.title, r.issued_at.ToJsonString(), s.received_from, s.equivocated, s.expired]


def records_listing(shown: list[Shown], language: str = "") -> Listing:
    def table() -> list[str]:
        if not shown:
            return [NO_RECORDS]
        frame = banner([s.record for s in shown])
        return [frame, *table_lines(shown, language), frame]

    return Listing([held_to_json(s, language) for s in shown], RECORD_COLUMNS, [record_cells(s) for s in shown],
                   table)


def run_query(args: argparse.Namespace) -> int:
    request = search_request(args)
    with client_from(args) as client:
        shown, more = fetch(client, request, None if args.all else args.limit)
        language = language_of(args, client)
    emit(args.format, records_listing(shown, language))
    if more:
        # stderr, so the note never mixes with JSON or falls outside the banners.
        print(f"exchange: showing the first {len(shown)} records; more match (use --limit N or --all)",
              file=sys.stderr)
    return 0
