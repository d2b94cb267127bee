"""A STIX 2.1 bundle as record drafts of the importing analyst's agency (pure).

What maps: ``threat-actor`` and ``intrusion-set`` (actors), ``attack-pattern``
(techniques), ``indicator`` with a STIX pattern of simple equality comparisons joined by OR
(observable sets), ``related-to`` relationships between imported objects (links),
``language-content`` on an imported object (translations of its title and summary), and an
object Exchange exported (its extension restores what STIX has no property for). Anything
else is listed with the reason it was not imported.

Markings are never invented: an object's TLP 2.0 marking and Exchange extension are kept;
what the object does not say (a foreign object has no classification) comes from the
analyst's ``--marking``, and without one the object is not imported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exchange.records.translations import well_formed
from exchange.records.validate import MAX_TITLE_CHARS
from exchange.stix.common import EXTENSION_ID, TLP_BY_ID, StixObject
from exchange.v1 import records_pb2

__all__ = ["Draft", "Intake", "parse_marking", "read_bundle"]

KINDS: dict[str, records_pb2.Kind] = {
    "threat-actor": records_pb2.KIND_ACTOR, "intrusion-set": records_pb2.KIND_ACTOR,
    "attack-pattern": records_pb2.KIND_TECHNIQUE, "indicator": records_pb2.KIND_OBSERVABLE_SET,
}
# STIX (object type, property) -> Exchange observable type.
OBSERVABLE_TYPES = {
    ("email-addr", "value"): "email", ("domain-name", "value"): "domain", ("url", "value"): "url",
    ("ipv4-addr", "value"): "ip", ("ipv6-addr", "value"): "ip", ("user-account", "account_login"): "platform_handle",
    ("email-message", "from_ref.value"): "email",  # how misp-stix writes an e-mail sender
}
_BRACKET = re.compile(r"\[((?:[^'\]]|'(?:[^'\\]|\\.)*')*)\]")
_COMPARISON = re.compile(r"([a-z0-9-]+):([a-z_.]+) = '((?:[^'\\]|\\.)*)'")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")  # what an Exchange tag may be
_NOT_RECORDS = {"marking-definition": "a marking definition (applied to the objects it marks)",
                "identity": "an identity (who made the objects; the importer's agency originates the drafts)",
                "extension-definition": "an extension definition (its properties are read where used)"}
# Objects Exchange adds beside a record's main object: folded back into that record.
_PARTS = {"email-addr", "domain-name", "url", "ipv4-addr", "ipv6-addr", "user-account", "indicator", "relationship"}


@dataclass
class Draft:
    """One object that becomes a draft: its STIX id (the bulk reference derives from it) and links."""

    stix_id: str
    draft: records_pb2.RecordDraft
    links: list[str] = field(default_factory=list)  # STIX ids of other drafts this one links to
    notes: list[str] = field(default_factory=list)  # what of the object was left out, and why

    @property
    def reference(self) -> str:
        return f"stix:{self.stix_id}"


@dataclass
class Intake:
    drafts: list[Draft] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (STIX id, why it was not imported)


def parse_marking(text: str) -> records_pb2.Marking:
    """``CLASSIFICATION [// CAVEAT]... [// REL TO A, B] // TLP:LEVEL``, as banners print it."""
    parts = [p.strip() for p in text.split("//")]
    marking = records_pb2.Marking(classification=parts[0])
    for part in parts[1:]:
        if part.startswith("TLP:"):
            marking.tlp = part.removeprefix("TLP:")
        elif part.startswith("REL TO "):
            marking.releasable_to.extend(a.strip() for a in part.removeprefix("REL TO ").split(",") if a.strip())
        elif part:
            marking.caveats.append(part)
    return marking


def _ext(obj: Mapping[str, Any]) -> dict[str, Any]:
    ext = obj.get("extensions", {}).get(EXTENSION_ID) if isinstance(obj.get("extensions"), dict) else None
    return ext if isinstance(ext, dict) else {}


def _marking(obj: Mapping[str, Any], fallback: records_pb2.Marking | None) -> records_pb2.Marking | str:
    """The object's marking, completed from ``fallback``; a reason string if it has none."""
    ext = _ext(obj)
    tlps = [TLP_BY_ID[r] for r in obj.get("object_marking_refs", []) if r in TLP_BY_ID]
    if len(tlps) > 1:
        return "more than one TLP marking"
    if "classification" in ext:
        marking = records_pb2.Marking(classification=ext["classification"], releasable_to=ext.get("releasable_to", []),
                                      caveats=ext.get("caveats", []))
    elif fallback is not None:
        marking = records_pb2.Marking()
        marking.CopyFrom(fallback)
    else:
        return "no Exchange marking (classification, releasable_to): give --marking"
    if tlps:
        marking.tlp = tlps[0]
    elif not marking.tlp:
        return "no TLP marking: give --marking"
    return marking


def _observables(pattern: str) -> list[records_pb2.Observable] | str:
    """The observables of a pattern of ``[...]`` terms joined by OR; a reason if it is not one."""
    terms = _BRACKET.findall(pattern)
    if not terms or " OR ".join(f"[{t}]" for t in terms) != pattern.strip():
        return "pattern is not [...] terms joined by OR"
    out = []
    for term in terms:
        found = _observable(term)
        if isinstance(found, str):
            return found
        out.append(found)
    return out


def _observable(term: str) -> records_pb2.Observable | str:
    """One ``[...]`` term: a single equality (``[domain-name:value = 'x']``), or MISP's way of
    saying an address (``[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = 'x']``)."""
    comparisons = _COMPARISON.findall(term)
    if not comparisons or " AND ".join(f"{t}:{p} = '{v}'" for t, p, v in comparisons) != term:
        return f"term [{term}] is not equalities joined by AND"
    props = {(t, p): _unescape(v) for t, p, v in comparisons}
    if len(comparisons) == 1:
        ((stix_type, prop), value), = props.items()
        kind = OBSERVABLE_TYPES.get((stix_type, prop))
        if kind is None:
            return f"no Exchange observable type for {stix_type}:{prop}"
        return records_pb2.Observable(type=kind, value=value)
    for end in ("src_ref", "dst_ref"):
        typed = props.get(("network-traffic", f"{end}.type"))
        if len(props) == 2 and typed in ("ipv4-addr", "ipv6-addr") and ("network-traffic", f"{end}.value") in props:
            return records_pb2.Observable(type="ip", value=props[("network-traffic", f"{end}.value")])
    return f"term [{term}] is not one observable"


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _translate(draft: records_pb2.RecordDraft, translated: list[StixObject], notes: list[str]) -> None:
    """The ``language-content`` objects on the draft's object, as its translations (the first
    per language; tags that are not BCP 47 are left out and said so)."""
    seen: set[str] = set()
    for obj in translated:
        contents = obj.get("contents")
        if not isinstance(contents, dict):
            raise TypeError("contents")
        for language, values in contents.items():
            if not isinstance(values, dict):
                raise TypeError("contents")
            if not well_formed(str(language)):
                notes.append(f"translation left out: {str(language)[:40]!r} is not a BCP 47 language tag")
                continue
            if str(language).lower() in seen:
                continue
            seen.add(str(language).lower())
            title = values.get("name") or values.get("abstract") or ""
            summary = values.get("description") or values.get("content") or ""
            if title or summary:
                draft.translations.add(language=str(language), title=str(title)[:MAX_TITLE_CHARS],
                                       summary=str(summary))


def _draft(obj: StixObject, parts: list[StixObject], fallback: records_pb2.Marking | None,
           translated: list[StixObject] | None = None) -> Draft | str:
    ext = _ext(obj)
    kind_name = ext.get("kind")
    kinds = {records_pb2.Kind.Name(k): k for k in set(KINDS.values())}
    kind = kinds[kind_name] if kind_name in kinds else KINDS.get(obj["type"])
    if kind is None:
        return f"no Exchange kind for {obj['type']}"
    marking = _marking(obj, fallback)
    if isinstance(marking, str):
        return marking
    # An unnamed indicator (as misp-stix writes them) is titled by what it matches.
    title = str(obj.get("name") or obj.get("abstract") or obj.get("pattern") or "")[:MAX_TITLE_CHARS]
    summary = obj.get("description") or (obj.get("content") if obj.get("content") != title else "") or ""
    labels = [str(label) for label in obj.get("labels", [])]
    tags = [label for label in labels if _SLUG.fullmatch(label)]
    notes = [f"labels not Exchange tags (lower-case words and hyphens): {', '.join(sorted(set(labels) - set(tags)))}"
             ] if len(tags) < len(labels) else []
    draft = records_pb2.RecordDraft(kind=kind, title=title, summary=summary, marking=marking,
                                    countries=ext.get("countries", []), sectors=ext.get("sectors", []),
                                    tags=tags, confidence=obj.get("confidence", 0))
    if ext:  # Exchange's own: the SCOs and the extension's list hold the observables
        for part in parts:
            key = next(((t, p) for (t, p) in OBSERVABLE_TYPES if t == part["type"] and p in part), None)
            if key is not None:
                draft.observables.add(type=OBSERVABLE_TYPES[key], value=part[key[1]])
        draft.observables.extend(records_pb2.Observable(**o) for o in ext.get("observables", []))
        for name in ("not_before", "not_after"):
            if name in ext.get("validity", {}) and not _set_time(getattr(draft.validity, name), ext["validity"][name]):
                return f"validity.{name} is not a timestamp"
    elif obj["type"] == "indicator":
        if "valid_until" in obj and not _set_time(draft.validity.not_after, obj["valid_until"]):
            return "valid_until is not a timestamp"
        found = _observables(str(obj.get("pattern", ""))) if obj.get("pattern_type") == "stix" else "not a STIX pattern"
        if isinstance(found, str):
            return found
        draft.observables.extend(found)
    _translate(draft, translated or [], notes)
    return Draft(obj["id"], draft, notes=notes)


def _set_time(target: Any, text: object) -> bool:
    """A STIX timestamp (UTC, ending in Z) into a protobuf Timestamp; False if it is not one."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return False
    if when.tzinfo is None:
        return False
    target.FromDatetime(when)
    return True


def read_bundle(bundle: Mapping[str, Any], fallback: records_pb2.Marking | None) -> Intake:
    """Every object of the bundle, as a draft or as a reason it was not imported."""
    objects = [o for o in bundle.get("objects", []) if isinstance(o, dict) and isinstance(o.get("id"), str)]
    intake = Intake()
    # An Exchange export's main object carries the envelope; its other objects are parts of it.
    mains = {(_ext(o).get("originator"), _ext(o).get("record_id")): o["id"] for o in objects if "envelope" in _ext(o)}
    parts: dict[str, list[StixObject]] = {}
    candidates = []
    by_id = {o["id"]: o for o in objects}
    # Translations, by the object they translate (Exchange's or another tool's).
    translated: dict[str, list[StixObject]] = {}
    for obj in objects:
        if obj["type"] == "language-content":
            translated.setdefault(str(obj.get("object_ref")), []).append(obj)
            continue
        ext = _ext(obj)
        owner = mains.get((ext.get("originator"), ext.get("record_id")))
        if owner is not None and owner != obj["id"] and obj["type"] in _PARTS:
            parts.setdefault(owner, []).append(obj)
        elif obj["type"] in _NOT_RECORDS:
            intake.skipped.append((obj["id"], _NOT_RECORDS[obj["type"]]))
        elif obj["type"] != "relationship":
            candidates.append(obj)
    drafts: dict[str, Draft] = {}
    for obj in candidates:
        try:
            made = _draft(obj, parts.get(obj["id"], []), fallback, translated.get(obj["id"], []))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of the wrong shape
            made = f"malformed ({type(exc).__name__}): a property does not have the type STIX gives it"
        if isinstance(made, str):
            intake.skipped.append((obj["id"], made))
        else:
            drafts[obj["id"]] = made
    for translates, translations in translated.items():
        if translates not in drafts:
            intake.skipped += [(t["id"], "translates an object that is not imported") for t in translations]
    by_record = {f"{origin}/{rid}": main for (origin, rid), main in mains.items()}
    for made in drafts.values():  # an Exchange export's links, wherever the target is in the bundle
        made.links += [by_record[r] for r in _ext(by_id[made.stix_id]).get("related", [])
                       if by_record.get(r) in drafts]
    folded = {id(p) for ps in parts.values() for p in ps}
    for rel in (o for o in objects if o["type"] == "relationship" and id(o) not in folded):
        source, target = rel.get("source_ref"), rel.get("target_ref")
        if rel.get("relationship_type") == "related-to" and source in drafts and target in drafts:
            drafts[source].links.append(str(target))
        else:
            intake.skipped.append((rel["id"], f"{rel.get('relationship_type')} is not a link between imported objects"))
    intake.drafts = list(drafts.values())
    return intake
