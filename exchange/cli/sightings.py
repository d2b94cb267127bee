"""``exchange sighting`` and ``exchange sightings``: feedback on partners' records.

``sighting RECORD --verdict seen|confirmed|false-positive`` reports on a partner's record
your node holds; your node signs it and the record's originator pulls it (and the agencies
named with ``--release-to``, if any, that hold the record). ``sightings RECORD`` shows what
your node holds on a record: on your own agency's records, what partners reported.
"""

from __future__ import annotations

import argparse

from exchange.cli.calls import liaison_calls, table, when
from exchange.cli.listing import Listing, emit, format_flag
from exchange.cli.options import Commands, Parser, client_from
from exchange.cli.refs import REF_HELP, REF_METAVAR, ref_arg, resolve_ref
from exchange.drafts import parse_time
from exchange.render import clean, dumps, truncate
from exchange.v1 import liaison_pb2, records_pb2

__all__ = ["register"]

VERDICTS = {"seen": records_pb2.VERDICT_SEEN, "confirmed": records_pb2.VERDICT_CONFIRMED,
            "false-positive": records_pb2.VERDICT_FALSE_POSITIVE}
NAMES = {v: k for k, v in VERDICTS.items()}
COLUMNS = ("reporter", "reported_by", "verdict", "observed_at", "reported_at", "note", "version")


def register(commands: Commands, connection: Parser) -> None:
    report = commands.add_parser(
        "sighting", parents=[connection], help="report a sighting or verdict on a partner's record",
        description="Tell a record's originator you saw it too, confirm it, or found it a false positive. "
                    "Your node signs the report; the originator's node pulls it.",
    )
    report.add_argument("ref", metavar=REF_METAVAR, type=ref_arg, help=REF_HELP)
    report.add_argument("--verdict", required=True, choices=sorted(VERDICTS), help="what you report")
    report.add_argument("--note", default="", help="a short note for the originator")
    report.add_argument("--observed", metavar="ISO8601", help="when you saw it (default: now; UTC if no zone)")
    report.add_argument("--release-to", metavar="AGENCY", action="append", default=[],
                        help="also release it to this agency (repeatable); by default only the originator")
    report.add_argument("--json", action="store_true", help="print the signed sighting as JSON")
    report.set_defaults(handler=run_report)

    listing = commands.add_parser("sightings", parents=[connection],
                                  help="sightings and verdicts your node holds on a record")
    listing.add_argument("ref", metavar=REF_METAVAR, type=ref_arg, help=REF_HELP)
    format_flag(listing)
    listing.set_defaults(handler=run_list)


def _json(s: records_pb2.Sighting) -> dict[str, object]:
    return {
        "sighting_id": s.sighting_id, "record": f"{s.ref.originator}/{s.ref.record_id}",
        "version": s.record_version, "reporter": s.reporter, "reported_by": s.reported_by or None,
        "verdict": NAMES.get(s.verdict, str(s.verdict)), "note": s.note,
        "observed_at": s.observed_at.ToJsonString(), "reported_at": s.reported_at.ToJsonString(),
        "releasable_to": list(s.releasable_to),
    }


def run_report(args: argparse.Namespace) -> int:
    request = liaison_pb2.ReportSightingRequest(verdict=VERDICTS[args.verdict], note=args.note,
                                                releasable_to=args.release_to)
    if args.observed:
        request.observed_at.CopyFrom(parse_time(args.observed, "--observed", assume_utc=True))
    with client_from(args) as client:
        request.ref.CopyFrom(resolve_ref(client, args.ref))
        answer = client.call(liaison_calls(client).report_sighting, request)
    s = answer.sighting
    if args.json:
        print(dumps(_json(s)))
        return 0
    to = ", ".join([s.ref.originator, *s.releasable_to])
    print(clean(f"reported {NAMES[s.verdict]} on {s.ref.originator}/{s.ref.record_id} (version "
                f"{s.record_version}); released to {to}, delivered when their nodes pull"))
    return 0


def run_list(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        ref = resolve_ref(client, args.ref)
        answer = client.call(liaison_calls(client).sightings, liaison_pb2.SightingsRequest(ref=ref))
    found = list(answer.sightings)

    def text() -> list[str]:
        if not found:
            return [f"No sightings held on {ref.originator}/{ref.record_id}."]
        rows = [[s.reporter, s.reported_by or "-", NAMES.get(s.verdict, "?"), when(s.observed_at),
                 str(s.record_version), truncate(clean(s.note), 50)] for s in found]
        return table(["REPORTER", "BY", "VERDICT", "OBSERVED", "VER", "NOTE"], rows)

    objects = [_json(s) for s in found]
    cells = [[o["reporter"], o["reported_by"] or "", o["verdict"], o["observed_at"], o["reported_at"], o["note"],
              o["version"]] for o in objects]
    emit(args.format, Listing(objects, COLUMNS, cells, text))
    return 0
