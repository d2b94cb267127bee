"""``--format table|json|jsonl|csv`` for every command that lists things.

A command builds its rows once, as JSON objects (json, jsonl) and as flat cells
(csv, which keeps full values: whole record ids, untruncated titles), and says
how to draw its table for people; ``emit`` writes whichever was asked for.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from exchange.render import dumps

__all__ = ["FORMATS", "Listing", "emit", "format_flag"]

FORMATS = ("table", "json", "jsonl", "csv")
# A cell starting with one of these is a formula to a spreadsheet, and cells hold what
# partners wrote: such a cell gets a leading apostrophe (OWASP's advice on CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def format_flag(parser: argparse.ArgumentParser, *, json_help: str = "same as --format json") -> None:
    """Add ``--format`` (and ``--json``, its older spelling) to a listing command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--format", choices=FORMATS, default="table",
                       help="table for people (default); json (one array), jsonl (an object a line) or csv")
    group.add_argument("--json", dest="format", action="store_const", const="json", help=json_help)


@dataclass(frozen=True)
class Listing:
    """One listing in every shape: JSON objects, CSV columns and cells, and the table for people."""

    objects: Sequence[dict[str, Any]]
    columns: Sequence[str]
    cells: Sequence[Sequence[object]]
    table: Callable[[], list[str]]


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def emit(fmt: str, listing: Listing) -> None:
    if fmt == "json":
        print(dumps(list(listing.objects)))
    elif fmt == "jsonl":
        for obj in listing.objects:
            print(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(listing.columns)
        writer.writerows([_csv_cell(c) for c in row] for row in listing.cells)
    else:
        print("\n".join(listing.table()))
