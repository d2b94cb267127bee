"""One signed record as STIX 2.1 objects (pure: the same record gives the same objects).

Actors become ``threat-actor`` (front companies too: the record says who acts, and STIX's
``identity`` names victims and sources, which is not what the analyst wrote), techniques
``attack-pattern``, observable sets ``indicator`` with a STIX pattern. Observables STIX has
a cyber-observable for become SCOs; the others (phone, company names, HS codes...) stay
in Exchange's extension with countries, sectors and the record's links, so nothing the
originator signed is lost. Every object carries the record's TLP as the OASIS TLP 2.0
marking and its classification, releasable_to and caveats in Exchange's extension; the
main object also carries the originator's signed envelope. The record's translations of its
title and summary are one ``language-content`` object on the main object (its title and
summary properties, per language tag, in the record's order).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from exchange.stix.common import EXTENSION_ID, TLP_IDS, StixObject, agency_identity_id, object_id
from exchange.stix.patterns import SCO_TYPES, pattern_of, sco_type
from exchange.v1 import records_pb2

__all__ = ["MAIN_TYPES", "TRANSLATED", "TRANSLATED_DEFAULT", "Resolver", "main_id", "record_objects", "stamp"]

MAIN_TYPES = {
    records_pb2.KIND_ACTOR: "threat-actor",
    records_pb2.KIND_TECHNIQUE: "attack-pattern",
    records_pb2.KIND_OBSERVABLE_SET: "indicator",
}
# An observable set with nothing STIX can pattern on has no indicator to be: a note.
NOTE = "note"

# (originator, record_id) -> the main object's id, for records present in the same bundle.
Resolver = Callable[[str, str], "str | None"]


def stamp(ts: Any) -> str:
    """A protobuf Timestamp as a STIX timestamp: UTC, 'Z', at least millisecond precision."""
    when = datetime.fromtimestamp(ts.seconds, UTC)
    micros = ts.nanos // 1000
    fraction = f"{micros // 1000:03d}" if micros % 1000 == 0 else f"{micros:06d}"
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction}Z"


def main_type(record: records_pb2.Record) -> str:
    kind = MAIN_TYPES.get(record.content.kind, NOTE)
    if kind == "indicator" and pattern_of(record.content.observables) is None:
        return NOTE
    return kind


def main_id(record: records_pb2.Record) -> str:
    return object_id(main_type(record), record.ref.originator, record.ref.record_id, "main")


def _common(record: records_pb2.Record, stix_type: str, stix_id: str) -> StixObject:
    marking = record.content.marking
    obj: StixObject = {"type": stix_type, "spec_version": "2.1", "id": stix_id}
    if stix_type not in SCO_TYPES:
        obj.update(created_by_ref=agency_identity_id(record.ref.originator),
                   created=stamp(record.created_at), modified=stamp(record.issued_at))
    if marking.tlp in TLP_IDS:
        obj["object_marking_refs"] = [TLP_IDS[marking.tlp]]
    ext: StixObject = {"extension_type": "property-extension", "classification": marking.classification}
    _put(ext, "releasable_to", list(marking.releasable_to))
    _put(ext, "caveats", list(marking.caveats))
    ext.update(originator=record.ref.originator, record_id=record.ref.record_id, record_version=record.version)
    obj["extensions"] = {EXTENSION_ID: ext}
    return obj


def _put(obj: StixObject, name: str, values: list[Any]) -> None:
    """STIX forbids empty lists: a property with no values is left out."""
    if values:
        obj[name] = values


def _main(record: records_pb2.Record, envelope: records_pb2.Envelope) -> StixObject:
    content = record.content
    stix_type = main_type(record)
    obj = _common(record, stix_type, main_id(record))
    if stix_type == NOTE:
        obj["abstract"] = content.title
        obj["content"] = content.summary or content.title
        obj["object_refs"] = [agency_identity_id(record.ref.originator)]
    else:
        obj["name"] = content.title
        if content.summary:
            obj["description"] = content.summary
    if stix_type == "indicator":
        obj["pattern"] = pattern_of(content.observables)
        obj["pattern_type"] = "stix"
        obj["pattern_version"] = "2.1"
        has = content.HasField("validity")
        not_before = content.validity.not_before if has and content.validity.HasField("not_before") else None
        obj["valid_from"] = stamp(not_before if not_before is not None else record.issued_at)
        if has and content.validity.HasField("not_after"):
            obj["valid_until"] = stamp(content.validity.not_after)
    if content.confidence:
        obj["confidence"] = content.confidence
    if content.tags:
        obj["labels"] = list(content.tags)
    ext = obj["extensions"][EXTENSION_ID]
    ext["kind"] = records_pb2.Kind.Name(content.kind)
    _put(ext, "countries", list(content.countries))
    _put(ext, "sectors", list(content.sectors))
    _put(ext, "observables", [{"type": o.type, "value": o.value} for o in content.observables
                              if sco_type(o) is None])
    _put(ext, "related", [f"{r.originator}/{r.record_id}" for r in content.related])
    if content.HasField("validity"):  # only an indicator has valid_from/valid_until; any record may have this
        bounds = {name: stamp(getattr(content.validity, name)) for name in ("not_before", "not_after")
                  if content.validity.HasField(name)}
        if bounds:
            ext["validity"] = bounds
    ext["envelope"] = base64.b64encode(envelope.SerializeToString(deterministic=True)).decode("ascii")
    return obj


def record_objects(
    record: records_pb2.Record, envelope: records_pb2.Envelope, resolve: Resolver
) -> list[StixObject]:
    """The record's objects, main object first; links to records in the bundle (``resolve``)
    become ``relationship`` objects, the rest stay in the extension's ``related``."""
    origin, rid = record.ref.originator, record.ref.record_id
    main = _main(record, envelope)
    out = [main]
    for i, observable in enumerate(record.content.observables):
        stix_type = sco_type(observable)
        if stix_type is None:
            continue
        sco = _common(record, stix_type, object_id(stix_type, origin, rid, f"observable/{i}"))
        sco["value" if stix_type != "user-account" else "account_login"] = observable.value
        out.append(sco)
    if main["type"] in ("threat-actor", "attack-pattern") and pattern_of(record.content.observables):
        indicator = _common(record, "indicator", object_id("indicator", origin, rid, "indicator"))
        indicator.update(name=record.content.title,
                         description=f"The observables of this {main['type']}: {record.content.title}",
                         pattern=pattern_of(record.content.observables),
                         pattern_type="stix", pattern_version="2.1", valid_from=stamp(record.issued_at))
        out.append(indicator)
        out.append(_relationship(record, "indicates", indicator["id"], main["id"], "indicates"))
    translated = _translations(record, main)
    if translated is not None:
        out.append(translated)
    for ref in record.content.related:
        target = resolve(ref.originator, ref.record_id)
        if target is not None:
            role = f"related/{ref.originator}/{ref.record_id}"
            out.append(_relationship(record, "related-to", main["id"], target, role))
    return out


# The main object's properties a translation's title and summary translate.
TRANSLATED = {NOTE: ("abstract", "content")}
TRANSLATED_DEFAULT = ("name", "description")


def _translations(record: records_pb2.Record, main: StixObject) -> StixObject | None:
    """The record's translations as one STIX ``language-content`` on its main object, or None."""
    if not record.content.translations:
        return None
    title, summary = TRANSLATED.get(main["type"], TRANSLATED_DEFAULT)
    contents: StixObject = {}
    for translation in record.content.translations:
        values: StixObject = {}
        if translation.title:
            values[title] = translation.title
        if translation.summary:
            values[summary] = translation.summary
        contents[translation.language] = values
    obj = _common(record, "language-content",
                  object_id("language-content", record.ref.originator, record.ref.record_id, "translations"))
    obj.update(object_ref=main["id"], object_modified=main["modified"], contents=contents)
    return obj


def _relationship(record: records_pb2.Record, kind: str, source: str, target: str, role: str) -> StixObject:
    rel = _common(record, "relationship",
                  object_id("relationship", record.ref.originator, record.ref.record_id, role))
    rel.update(relationship_type=kind, source_ref=source, target_ref=target)
    return rel

