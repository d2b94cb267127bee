"""The record form: what a browser sends, turned into a ``RecordDraft``, and errors per field.

The form is read leniently (lists separated by commas, one observable a line), then held to
the API's own rules (``exchange.records.validate.validate_draft``, the function the node
runs), so a bad record is refused with the field named before anything is sent; the node's
answer is mapped back to the field the same way.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from google.protobuf.timestamp_pb2 import Timestamp

from exchange.config import Limits
from exchange.errors import InvalidInput
from exchange.records.validate import validate_draft
from exchange.v1 import records_pb2

__all__ = ["FIELDS", "KINDS", "RecordForm", "field_of", "form_from_record", "keep_unshown"]

KINDS: dict[str, records_pb2.Kind] = {
    "actor": records_pb2.KIND_ACTOR,
    "technique": records_pb2.KIND_TECHNIQUE,
    "observable_set": records_pb2.KIND_OBSERVABLE_SET,
}
KIND_KEYS = {value: key for key, value in KINDS.items()}
# The form's fields, in the order the page shows them.
FIELDS = ("kind", "title", "summary", "countries", "sectors", "tags", "observables", "related", "confidence",
          "valid_from", "valid_until", "classification", "releasable_to", "tlp", "caveats", "reference",
          "translation_language", "translation_title", "translation_summary")
_LIST_SPLIT = re.compile(r"[,\s、，]+")
_LOCAL_TIME = "%Y-%m-%dT%H:%M"


@dataclass
class RecordForm:
    """The form's values as typed (to show again) and what went wrong, by field."""

    values: dict[str, str] = field(default_factory=dict)
    chosen: dict[str, list[str]] = field(default_factory=dict)  # checkbox groups
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_post(cls, data: Mapping[str, str], multi: Mapping[str, list[str]]) -> RecordForm:
        form = cls(values={name: data.get(name, "") for name in FIELDS})
        form.chosen = {name: multi.get(name, []) for name in ("releasable_to", "caveats")}
        return form

    def error(self, name: str, problem: str) -> None:
        self.errors.setdefault(name, problem)

    def draft(self, zone: ZoneInfo) -> records_pb2.RecordDraft:
        """The draft, with ``errors`` set for every field that does not read (those fields left empty)."""
        v = self.values
        draft = records_pb2.RecordDraft(title=v["title"].strip(), summary=v["summary"].replace("\r\n", "\n"))
        if v["kind"] not in KINDS:
            self.error("kind", "choose actor, technique or observable set")
        else:
            draft.kind = KINDS[v["kind"]]
        for name in ("countries", "sectors", "tags"):
            getattr(draft, name).extend(item for item in _LIST_SPLIT.split(v[name]) if item)
        for n, line in enumerate(v["observables"].splitlines(), start=1):
            if not line.strip():
                continue
            kind, sep, value = line.partition(":")
            if not sep or not kind.strip() or not value.strip():
                self.error("observables", f"line {n}: expected TYPE: VALUE, e.g. email: a@example.org")
                continue
            draft.observables.add(type=kind.strip(), value=value.strip())
        for n, line in enumerate(v["related"].splitlines(), start=1):
            if not line.strip():
                continue
            originator, sep, record_id = line.strip().partition("/")
            if not sep:
                self.error("related", f"line {n}: expected ORIGINATOR/record-id")
                continue
            draft.related.add(originator=originator, record_id=record_id)
        confidence = v["confidence"].strip() or "0"
        if not confidence.isdigit() or int(confidence) > 100:
            self.error("confidence", "expected a whole number from 0 to 100")
        else:
            draft.confidence = int(confidence)
        for name, target in (("valid_from", "not_before"), ("valid_until", "not_after")):
            stamp = self._time(name, zone)
            if stamp is not None:
                getattr(draft.validity, target).CopyFrom(stamp)
        draft.marking.classification = v["classification"]
        draft.marking.tlp = v["tlp"]
        draft.marking.releasable_to.extend(self.chosen.get("releasable_to", []))
        draft.marking.caveats.extend(self.chosen.get("caveats", []))
        # One optional translation row; the API's rules (language tag, one per language) check it.
        language, title = v["translation_language"].strip(), v["translation_title"].strip()
        summary = v["translation_summary"].replace("\r\n", "\n")
        if language or title or summary.strip():
            draft.translations.add(language=language, title=title, summary=summary)
        return draft

    def _time(self, name: str, zone: ZoneInfo) -> Timestamp | None:
        text = self.values[name].strip()
        if not text:
            return None
        try:
            moment = dt.datetime.strptime(text, _LOCAL_TIME)
        except ValueError:
            self.error(name, "expected a date and time such as 2027-01-31T18:00")
            return None
        stamp = Timestamp()
        stamp.FromDatetime(moment.replace(tzinfo=zone))
        return stamp

    def check(self, draft: records_pb2.RecordDraft, partners: frozenset[str] | None) -> None:
        """The API's rules, adding the first field they refuse (without a manifest, the node checks)."""
        if partners is None:
            return
        try:
            validate_draft(draft, partners=partners, limits=Limits())
        except InvalidInput as error:
            self.error(field_of(error.field), error.problem)  # "": the record as a whole


# validate_draft's field paths, e.g. "draft.marking.tlp", "draft.observables[2]", "draft.validity.not_after".
_PATH = re.compile(r"^draft\.(?P<head>[a-z_]+)(?:\[\d+\])?(?:\.(?P<sub>[a-z_]+))?")
_MARKING = {"classification", "tlp", "releasable_to", "caveats"}


def field_of(path: str) -> str:
    """The form field for an API field path ("" when none fits: the error belongs to the page)."""
    match = _PATH.match(path)
    if match is None:
        return ""
    head, sub = match["head"], match["sub"]
    if head == "marking":
        return sub if sub in _MARKING else "classification"
    if head == "validity":
        return "valid_from" if sub == "not_before" else "valid_until"
    if head == "translations":
        return f"translation_{sub}" if sub in ("title", "summary") else "translation_language"
    return head if head in FIELDS else ""


def node_error(message: str) -> tuple[str, str]:
    """(field, problem) from the node's one-line refusal, e.g. "draft.title: missing"."""
    path, sep, problem = message.partition(": ")
    name = field_of(path) if sep else ""
    return (name, problem) if name else ("", message)


def form_from_record(record: records_pb2.Record, zone: ZoneInfo) -> RecordForm:
    """The form filled with a record's content, to revise it."""
    c = record.content

    def local(stamp: Timestamp, present: bool) -> str:
        return stamp.ToDatetime(tzinfo=dt.UTC).astimezone(zone).strftime(_LOCAL_TIME) if present else ""

    values = {
        "kind": KIND_KEYS.get(c.kind, ""),
        "title": c.title,
        "summary": c.summary,
        "countries": ", ".join(c.countries),
        "sectors": ", ".join(c.sectors),
        "tags": ", ".join(c.tags),
        "observables": "\n".join(f"{o.type}: {o.value}" for o in c.observables),
        "related": "\n".join(f"{r.originator}/{r.record_id}" for r in c.related),
        "confidence": str(c.confidence),
        "valid_from": local(c.validity.not_before, c.validity.HasField("not_before")),
        "valid_until": local(c.validity.not_after, c.validity.HasField("not_after")),
        "classification": c.marking.classification,
        "tlp": c.marking.tlp,
        "reference": "",
        "translation_language": c.translations[0].language if c.translations else "",
        "translation_title": c.translations[0].title if c.translations else "",
        "translation_summary": c.translations[0].summary if c.translations else "",
    }
    return RecordForm(values=values,
                      chosen={"releasable_to": list(c.marking.releasable_to), "caveats": list(c.marking.caveats)})


# The draft's fields the form edits; any other the protocol gains is kept. The form edits the
# first translation; the others are kept (see ``keep_unshown``).
_FORM_FIELDS = frozenset({"kind", "title", "summary", "countries", "sectors", "tags", "observables", "related",
                          "confidence", "validity", "marking", "translations"})


def keep_unshown(draft: records_pb2.RecordDraft, base: records_pb2.RecordDraft) -> None:
    """Copy into a revision every field of the revised content that the form does not show, so
    revising in the console never drops what it cannot edit."""
    for descriptor, _ in base.ListFields():
        if descriptor.name not in _FORM_FIELDS:
            target = getattr(draft, descriptor.name)
            if descriptor.is_repeated:
                del target[:]
                target.extend(getattr(base, descriptor.name))
            elif descriptor.message_type is not None:
                target.CopyFrom(getattr(base, descriptor.name))
            else:
                setattr(draft, descriptor.name, getattr(base, descriptor.name))
    # Translations after the first are not on the form: kept, unless the row now has their language.
    shown = {t.language for t in draft.translations}
    draft.translations.extend(t for t in base.translations[1:] if t.language not in shown)
