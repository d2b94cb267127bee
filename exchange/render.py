"""Showing records to people: classification banners, tables, one record in full, JSON.

Every output for people is framed by the banner of the most sensitive record
it shows, as on classified systems, so a screen or a printout carries its own
handling instructions.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from exchange.core.marking import CLASSIFICATIONS
from exchange.records.translations import translation_for
from exchange.v1 import records_pb2

__all__ = [
    "NO_RECORDS",
    "TLP_ORDER",
    "Shown",
    "banner",
    "combined_marking",
    "display_width",
    "fit",
    "held_to_json",
    "record_lines",
    "table_lines",
    "truncate",
]

NO_RECORDS = "==== no records ===="
TLP_ORDER: tuple[str, ...] = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
TITLE_COLUMNS = 48
KIND_NAMES = {
    records_pb2.KIND_ACTOR: "actor",
    records_pb2.KIND_TECHNIQUE: "technique",
    records_pb2.KIND_OBSERVABLE_SET: "observable_set",
}
STATUS_NAMES = {records_pb2.STATUS_ACTIVE: "active", records_pb2.STATUS_RETRACTED: "retracted"}
# Text comes from partners: escape sequences, line breaks inside a field and
# bidirectional overrides must not reach the terminal and rearrange what it shows.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Shown:
    """A record as the node served it, decoded once."""

    record: records_pb2.Record
    received_from: str
    equivocated: bool
    # Partners' sightings on the own agency's records (the node sets them for the originator only).
    sightings: records_pb2.SightingCounts | None = None

    @classmethod
    def from_held(cls, held: records_pb2.HeldRecord) -> Shown:
        record = records_pb2.Record.FromString(held.envelope.payload)
        return cls(record, held.received_from, held.equivocated,
                   held.sightings if held.HasField("sightings") else None)

    @property
    def expired(self) -> bool:
        return validity_state(self.record) == EXPIRED

    @property
    def not_yet_valid(self) -> bool:
        return validity_state(self.record) == NOT_YET_VALID


EXPIRED = "expired"
NOT_YET_VALID = "not yet valid"


def validity_state(record: records_pb2.Record, now: dt.datetime | None = None) -> str:
    """``EXPIRED`` (validity ended before ``now``), ``NOT_YET_VALID`` (starts after it), or "".

    From the signed validity itself, with this machine's clock, so the label never depends
    on the node's copy of it (a search leaves expired records out by that copy).
    """
    validity = record.content.validity
    moment = now or dt.datetime.now(dt.UTC)
    if validity.HasField("not_after") and validity.not_after.ToDatetime(tzinfo=dt.UTC) < moment:
        return EXPIRED
    if validity.HasField("not_before") and validity.not_before.ToDatetime(tzinfo=dt.UTC) > moment:
        return NOT_YET_VALID
    return ""


# --- banners -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BannerMarking:
    classification: str
    rel_to: frozenset[str]
    tlp: str
    caveats: frozenset[str]

    def text(self) -> str:
        parts = [self.classification or "UNMARKED"]
        parts.extend(sorted(self.caveats))
        parts.append("REL TO " + (", ".join(sorted(self.rel_to)) or "NO ONE"))
        parts.append(f"TLP:{self.tlp or 'UNMARKED'}")
        return " // ".join(parts)


def _rank(value: str, order: Sequence[str]) -> int:
    # Unknown (or absent) values rank above everything: unknown denies, so it
    # must never make a page look less sensitive than it is.
    return order.index(value) if value in order else len(order)


def _marking_of(record: records_pb2.Record) -> BannerMarking:
    m = record.content.marking
    audience = frozenset(m.releasable_to) | {record.ref.originator}
    return BannerMarking(m.classification, audience, m.tlp, frozenset(m.caveats))


def combined_marking(records: Iterable[records_pb2.Record]) -> BannerMarking | None:
    """The marking that covers all ``records`` together; None for no records."""
    markings = [_marking_of(r) for r in records]
    if not markings:
        return None
    classification = max((m.classification for m in markings), key=lambda c: _rank(c, CLASSIFICATIONS))
    tlp = max((m.tlp for m in markings), key=lambda t: _rank(t, TLP_ORDER))
    rel_to = frozenset.intersection(*(m.rel_to for m in markings))
    caveats = frozenset().union(*(m.caveats for m in markings))
    return BannerMarking(classification, rel_to, tlp, caveats)


def marking_text(originator: str, marking: records_pb2.Marking) -> str:
    """One marking as a banner reads it (``SECRET // REL TO JPN-NPA, USA-DTSF // TLP:AMBER``)."""
    record = records_pb2.Record(ref=records_pb2.RecordRef(originator=originator),
                                content=records_pb2.RecordDraft(marking=marking))
    return clean(_marking_of(record).text())


def banner(records: Iterable[records_pb2.Record]) -> str:
    """``==== CONFIDENTIAL // REL TO JPN-NPA, USA-DTSF // TLP:AMBER ====`` for these records."""
    marking = combined_marking(records)
    return NO_RECORDS if marking is None else f"==== {clean(marking.text())} ===="


# --- text width ----------------------------------------------------------------------------


def clean(text: str) -> str:
    """One line of text safe to print: tabs become spaces, other controls a visible mark."""
    return _CONTROL_RE.sub("\N{REPLACEMENT CHARACTER}", text.replace("\t", " "))


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters take two."""
    return sum(_char_width(c) for c in text)


def truncate(text: str, width: int, ellipsis: str = "...") -> str:
    """``text`` cut to at most ``width`` columns, marked with ``ellipsis`` when cut."""
    if display_width(text) <= width:
        return text
    room = width - display_width(ellipsis)
    kept: list[str] = []
    used = 0
    for char in text:
        w = _char_width(char)
        if used + w > room:
            break
        kept.append(char)
        used += w
    return "".join(kept) + ellipsis[: max(width, 0)]


def fit(text: str, width: int) -> str:
    """``text`` truncated or padded with spaces to exactly ``width`` columns."""
    cut = truncate(text, width)
    return cut + " " * (width - display_width(cut))


# --- tables and records --------------------------------------------------------------------


def _date(stamp: Timestamp, *, with_time: bool = False) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    moment = stamp.ToDatetime(tzinfo=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ" if with_time else "%Y-%m-%d")


def _title(shown: Shown, language: str = "") -> str:
    record = shown.record
    title = record.content.title or ("(retracted)" if record.status == records_pb2.STATUS_RETRACTED else "")
    translated = translation_for(record.content, language)
    if translated is not None and translated.title:
        title = f"[{translated.language}] {translated.title} / {title}"  # the original always beside it
    state = validity_state(record)
    return ("! " if shown.equivocated else "") + (f"[{state}] " if state else "") + title


def table_lines(rows: Sequence[Shown], language: str = "") -> list[str]:
    """A table of records: one line each, columns aligned in terminal columns; with ``language``,
    the title in that language where the record has a translation, then the original."""
    header = ["ORIGINATOR", "ID", "VER", "KIND", "CLASSIFICATION", "TLP", "TITLE", "ISSUED"]
    cells = [
        [
            s.record.ref.originator,
            s.record.ref.record_id[:8],
            str(s.record.version),
            KIND_NAMES.get(s.record.content.kind, "?"),
            s.record.content.marking.classification,
            s.record.content.marking.tlp,
            truncate(clean(_title(s, language)), TITLE_COLUMNS),
            _date(s.record.issued_at),
        ]
        for s in rows
    ]
    cells = [[clean(c) for c in row] for row in cells]  # the other columns come from partners too
    widths = [max(display_width(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *cells]
    ]
    if any(s.equivocated for s in rows):
        lines.append("! equivocated: the originator signed two different contents for one version")
    return lines


def _field(label: str, value: str) -> str:
    return f"{label + ':':<15}{value}"


def record_lines(shown: Shown, language: str = "") -> list[str]:
    """One record in full, for reading. With ``language``, the title and summary in that language
    where the record carries a translation, each with the original beside it."""
    r, c = shown.record, shown.record.content
    translated = translation_for(c, language)
    lines = []
    if translated is not None and translated.title:
        lines.append(_field(f"Title [{translated.language}]", translated.title))
    lines += [
        _field("Title", c.title or "-"),
        _field("Record", f"{r.ref.originator}/{r.ref.record_id}"),
        _field("Version", f"{r.version} ({STATUS_NAMES.get(r.status, 'unknown status')})"),
        _field("Kind", KIND_NAMES.get(c.kind, "unknown")),
        _field("Issued", f"{_date(r.issued_at, with_time=True)} (v1 {_date(r.created_at, with_time=True)})"),
        _field("Marking", _marking_of(r).text()),
        _field("Countries", ", ".join(c.countries) or "-"),
        _field("Sectors", ", ".join(c.sectors) or "-"),
        _field("Confidence", str(c.confidence)),
        _field("Valid", f"{_date(c.validity.not_before, with_time=True)} to "
                        f"{_date(c.validity.not_after, with_time=True)}"
                        + (f" ({validity_state(r).upper()})" if validity_state(r) else "")),
        _field("Tags", ", ".join(c.tags) or "-"),
        _field("Received from", shown.received_from or "-"),
    ]
    if r.status == records_pb2.STATUS_RETRACTED:
        lines.append(_field("Retracted", r.retraction_reason or "(no reason given)"))
    if shown.equivocated:
        lines.append("WARNING: equivocated: the originator signed two different contents for this version")
    if shown.sightings is not None:
        counts = shown.sightings
        lines.append(_field("Sightings", f"{counts.seen} seen, {counts.confirmed} confirmed, "
                            f"{counts.false_positive} false positive by partners (`exchange sightings`)"))
    lines.append(f"Observables ({len(c.observables)}):")
    type_width = max((display_width(o.type) for o in c.observables), default=0)
    lines.extend(f"  {fit(o.type, type_width)}  {o.value}" for o in c.observables)
    lines.append(f"Related ({len(c.related)}):")
    lines.extend(f"  {ref.originator}/{ref.record_id}" for ref in c.related)
    if c.translations:
        lines.append(_field("Translations", ", ".join(t.language for t in c.translations)))
    if language and translated is None:
        lines.append(_field("Translation", f"none into {language}; the original follows"))
    if translated is not None and translated.summary:
        lines.append(f"Summary [{translated.language}]:")
        lines.extend(f"  {line}" for line in translated.summary.splitlines())
    lines.append("Summary:" if translated is None or not translated.summary else "Summary (original):")
    lines.extend(f"  {line}" for line in (c.summary or "-").splitlines())
    return [clean(line) for line in lines]


def held_to_json(shown: Shown, language: str = "") -> dict[str, Any]:
    data = MessageToDict(shown.record, preserving_proto_field_name=True)
    translated = translation_for(shown.record.content, language)
    if language:  # the one asked for, beside the original in content (null: none in that language)
        data["translation"] = None if translated is None else MessageToDict(translated)
    data["received_from"] = shown.received_from
    data["equivocated"] = shown.equivocated
    data["expired"] = shown.expired
    data["not_yet_valid"] = shown.not_yet_valid
    if shown.sightings is not None:
        data["sightings"] = {"seen": shown.sightings.seen, "confirmed": shown.sightings.confirmed,
                             "false_positive": shown.sightings.false_positive}
    return data


def dumps(data: object) -> str:
    # Japanese and Korean text stays readable rather than \u-escaped.
    return json.dumps(data, ensure_ascii=False, indent=2)
