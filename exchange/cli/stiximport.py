"""``exchange import --format stix21 FILE``: a STIX 2.1 bundle as drafts of your agency.

Mapping is exchange.stix.intake's; submission is the bulk path's (exchange.cli.bulk), one
reference per object derived from its STIX id, so a rerun imports nothing twice. Drafts
are submitted in waves so a link can name the record its target became.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from exchange.cli.bulk import Line, Outcome, submit_lines
from exchange.cli.options import Commands, Parser, client_from
from exchange.errors import InvalidInput
from exchange.render import clean
from exchange.stix.intake import Draft, parse_marking, read_bundle
from exchange.v1 import records_pb2

__all__ = ["register"]


def register(commands: Commands, connection: Parser) -> None:
    command = commands.add_parser(
        "import", parents=[connection], help="turn a STIX 2.1 bundle into drafts of your agency",
        description="Actors, techniques, indicators and their links become records of your agency; every "
                    "other object is listed with why it was not imported. A rerun imports nothing twice.",
    )
    command.add_argument("file", metavar="FILE", help="a STIX 2.1 bundle (JSON)")
    command.add_argument("--format", choices=["stix21"], required=True, help="stix21")
    command.add_argument("--marking", metavar="MARKING",
                         help="for objects the bundle does not mark, e.g. 'CONFIDENTIAL // REL TO USA-DTSF // "
                              "TLP:AMBER' (an object's own TLP marking is kept)")
    command.set_defaults(handler=run_import)


def _read(name: str) -> object:
    path = Path(name)
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidInput("FILE", f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("FILE", f"{path} is not JSON ({exc})") from None


def run_import(args: argparse.Namespace) -> int:
    bundle = _read(args.file)
    if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
        raise InvalidInput("FILE", f"{args.file} is not a STIX bundle")
    intake = read_bundle(bundle, parse_marking(args.marking) if args.marking else None)
    for stix_id, why in intake.skipped:
        print(clean(f"not imported {stix_id}: {why}"))
    done: dict[str, records_pb2.RecordRef] = {}
    failed: set[str] = set()
    remaining = list(intake.drafts)
    counts = {"new": 0, "existing": 0, "rejected": 0}
    with client_from(args) as client:
        while remaining:
            # A wave: every draft whose link targets are settled (imported or not).
            wave = [d for d in remaining if all(t in done or t in failed for t in d.links)]
            if not wave:  # links in a cycle: nothing can name its target's record first
                for d in remaining:
                    print(clean(f"not imported {d.stix_id}: its links form a cycle"))
                    counts["rejected"] += 1
                break
            remaining = [d for d in remaining if d not in wave]
            lines = [Line(i + 1, d.reference, _with_links(d, done)) for i, d in enumerate(wave)]

            def emit(outcome: Outcome, wave: list[Draft] = wave) -> None:
                draft = wave[outcome.line - 1]
                counts[outcome.status] += 1
                if outcome.status == "rejected" or outcome.record is None:
                    failed.add(draft.stix_id)
                    print(clean(f"not imported {draft.stix_id}: {outcome.reason}"))
                    return
                originator, _, record_id = outcome.record.partition("/")
                done[draft.stix_id] = records_pb2.RecordRef(originator=originator, record_id=record_id)
                again = " (already imported)" if outcome.status == "existing" else ""
                left_out = "".join(f"; left out {note}" for note in draft.notes)
                print(clean(f"imported {draft.stix_id} as {outcome.record}{again}{left_out}"))

            result = submit_lines(client, lines, emit, parallel=1)
            if result.error is not None:
                print(f"exchange: stopped: {result.error}; rerun to import the rest", file=sys.stderr)
                return 1
    print(f"{counts['new'] + counts['existing']} imported ({counts['new']} new, {counts['existing']} already "
          f"imported), {counts['rejected']} refused, {len(intake.skipped)} other "
          f"{'object' if len(intake.skipped) == 1 else 'objects'} not imported")
    return 1 if counts["rejected"] else 0


def _with_links(draft: Draft, done: dict[str, records_pb2.RecordRef]) -> records_pb2.RecordDraft:
    out = records_pb2.RecordDraft()
    out.CopyFrom(draft.draft)
    out.related.extend(done[t] for t in draft.links if t in done)
    return out
