"""What the templates show, computed from the node's answers: banners, dates, one record.

Everything here returns plain text; the templates escape all of it (autoescape), so no
string a partner signed can become markup, whatever it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from exchange.core.manifest import Manifest
from exchange.errors import TransportError, VerificationError
from exchange.records.envelope import open_record
from exchange.render import EXPIRED, NOT_YET_VALID, Shown, combined_marking, validity_state
from exchange.v1 import records_pb2

__all__ = ["Banner", "Row", "Translation", "banner_for", "fmt_time", "record_rows", "shown_of", "translations",
           "verification"]

# The colours agencies use for each level; an unknown value is shown as the most sensitive.
LEVEL_CLASSES = {
    "UNCLASSIFIED": "unclassified",
    "RESTRICTED": "restricted",
    "CONFIDENTIAL": "confidential",
    "SECRET": "secret",
    "TOP SECRET": "top-secret",
}


@dataclass(frozen=True)
class Banner:
    text: str
    css: str  # banner-<level>
    classification: str


def banner_for(records: Iterable[records_pb2.Record], nothing: str) -> Banner:
    """The banner of the most sensitive of ``records``; ``nothing`` labels a page without records."""
    marking = combined_marking(records)
    if marking is None:
        return Banner(nothing, "banner-none", "")
    css = LEVEL_CLASSES.get(marking.classification, "unknown")
    return Banner(marking.text(), f"banner-{css}", marking.classification)


def marking_record(originator: str, marking: records_pb2.Marking) -> records_pb2.Record:
    """A content-free record carrying only a marking, for a banner of facts about a record."""
    return records_pb2.Record(ref=records_pb2.RecordRef(originator=originator),
                              content=records_pb2.RecordDraft(marking=marking))


def fmt_time(stamp: Timestamp, zone: ZoneInfo) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return stamp.ToDatetime(tzinfo=dt.UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def shown_of(held: records_pb2.HeldRecord, address: str) -> Shown:
    try:
        return Shown.from_held(held)
    except DecodeError:
        raise TransportError(f"The node at {address} sent a record that does not parse.") from None


def verification(envelope: records_pb2.Envelope, manifest: Manifest | None) -> tuple[str, str]:
    """("ok"|"node"|"bad", reason): the signature checked here against the manifest when there is one."""
    if manifest is None:
        return "node", ""
    try:
        open_record(envelope, manifest)
    except VerificationError as error:
        return "bad", str(error)
    return "ok", ""


@dataclass(frozen=True)
class Row:
    """One record in a table of results."""

    originator: str
    record_id: str
    version: int
    kind: str
    classification: str
    tlp: str
    title: str
    issued: str
    received_from: str
    state: str  # "", expired, not_yet_valid, retracted
    equivocated: bool
    banner_css: str

    @property
    def href(self) -> str:
        return f"/record/{self.originator}/{self.record_id}"


KIND_KEYS = {records_pb2.KIND_ACTOR: "actor", records_pb2.KIND_TECHNIQUE: "technique",
             records_pb2.KIND_OBSERVABLE_SET: "observable_set"}


def state_of(shown: Shown) -> str:
    if shown.record.status == records_pb2.STATUS_RETRACTED:
        return "retracted"
    state = validity_state(shown.record)
    return {EXPIRED: "expired", NOT_YET_VALID: "not_yet_valid"}.get(state, "")


def record_rows(shown: Iterable[Shown], zone: ZoneInfo) -> list[Row]:
    rows = []
    for s in shown:
        r, c = s.record, s.record.content
        rows.append(Row(
            originator=r.ref.originator, record_id=r.ref.record_id, version=r.version,
            kind=KIND_KEYS.get(c.kind, "?"), classification=c.marking.classification, tlp=c.marking.tlp,
            title=c.title, issued=fmt_time(r.issued_at, zone), received_from=s.received_from,
            state=state_of(s), equivocated=s.equivocated,
            banner_css="level-" + LEVEL_CLASSES.get(c.marking.classification, "unknown"),
        ))
    return rows


# Fields this console shows in their own place; any other field set on a record (translations,
# sightings, ... as the protocol gains them) is shown under "More about this record", as text.
_SHOWN_FIELDS = {
    "exchange.v1.Record": {"ref", "version", "status", "created_at", "issued_at", "content", "retraction_reason"},
    "exchange.v1.RecordDraft": {"kind", "title", "summary", "countries", "sectors", "observables", "related",
                                "confidence", "validity", "tags", "marking", "translations"},
    "exchange.v1.HeldRecord": {"envelope", "received_from", "received_at", "equivocated", "sightings"},
}


def extra_fields(messages: Iterable[Message]) -> list[tuple[str, list[str]]]:
    """(field name, its values as lines of text) for every field the console has no place for."""
    extras: list[tuple[str, list[str]]] = []
    for message in messages:
        known = _SHOWN_FIELDS.get(message.DESCRIPTOR.full_name, set())
        for descriptor, value in message.ListFields():
            if descriptor.name in known:
                continue
            extras.append((descriptor.name, _lines(descriptor, value)))
    return extras


def _lines(descriptor: FieldDescriptor, value: Any) -> list[str]:
    values = list(value) if descriptor.is_repeated else [value]
    lines = []
    for item in values:
        if isinstance(item, Message):
            data = MessageToDict(item, preserving_proto_field_name=True)
            lines.append("; ".join(f"{k}: {_plain(v)}" for k, v in data.items()))
        else:
            lines.append(str(item))
    return lines


def _plain(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Translation:
    language: str
    lang_attribute: str  # the tag for the page's lang attribute, "" when it is not one
    title: str
    summary: str


def translations(content: records_pb2.RecordDraft) -> list[Translation]:
    """The record's translations of title and summary, when the protocol carries them."""
    if "translations" not in content.DESCRIPTOR.fields_by_name:
        return []
    found = []
    for item in getattr(content, "translations"):  # noqa: B009 (a field newer protocols have)
        language = str(getattr(item, "language", ""))
        found.append(Translation(language, language if _LANGUAGE_TAG.match(language) else "",
                                 str(getattr(item, "title", "")), str(getattr(item, "summary", ""))))
    return found
