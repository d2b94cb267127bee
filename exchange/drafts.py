"""Record drafts written as JSON, turned into ``RecordDraft`` messages.

Only structure and types are checked here, each refusal naming the JSON path
of the field; what the values mean (known TLP labels, partner codes, ...) is
the node's to judge, so the rules live in one place.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from exchange.errors import InvalidInput
from exchange.v1 import records_pb2

__all__ = [
    "KINDS",
    "draft_from_json",
    "draft_label",
    "load_json",
    "parse_time",
    "read_draft",
    "read_revision",
    "revision_from_json",
]

KINDS: dict[str, records_pb2.Kind] = {
    "actor": records_pb2.KIND_ACTOR,
    "technique": records_pb2.KIND_TECHNIQUE,
    "observable_set": records_pb2.KIND_OBSERVABLE_SET,
}
_UINT32_MAX = 2**32 - 1

T = TypeVar("T")


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: object, path: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(path, "expected an object")
    for key in value:
        if key not in allowed:
            raise InvalidInput(_at(path, key), f"unknown field (expected {', '.join(sorted(allowed))})")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(path, "expected a string")
    return value


def _strings(value: object, path: str) -> list[str]:
    return _list(value, path, _string)


def _list(value: object, path: str, item: Callable[[object, str], T]) -> list[T]:
    if not isinstance(value, list):
        raise InvalidInput(path, "expected a list")
    return [item(entry, f"{path}[{i}]") for i, entry in enumerate(value)]


def _required(data: Mapping[str, Any], key: str, path: str) -> object:
    if key not in data:
        raise InvalidInput(_at(path, key), "missing")
    return data[key]


def parse_time(text: str, path: str, *, assume_utc: bool = False) -> Timestamp:
    """An RFC 3339 / ISO 8601 time; without ``assume_utc`` it must carry its timezone."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        problem = f"expected an ISO 8601 time such as 2025-01-01T00:00:00Z, got {text!r}"
        raise InvalidInput(path, problem) from None
    if parsed.tzinfo is None:
        if not assume_utc:
            raise InvalidInput(path, f"time without a timezone: {text!r} (add Z for UTC)")
        parsed = parsed.replace(tzinfo=dt.UTC)
    stamp = Timestamp()
    stamp.FromDatetime(parsed)
    return stamp


def _time(value: object, path: str) -> Timestamp:
    return parse_time(_string(value, path), path)


def _observable(value: object, path: str) -> records_pb2.Observable:
    data = _object(value, path, frozenset({"type", "value"}))
    return records_pb2.Observable(
        type=_string(_required(data, "type", path), _at(path, "type")),
        value=_string(_required(data, "value", path), _at(path, "value")),
    )


def _ref(value: object, path: str) -> records_pb2.RecordRef:
    data = _object(value, path, frozenset({"originator", "record_id"}))
    return records_pb2.RecordRef(
        originator=_string(_required(data, "originator", path), _at(path, "originator")),
        record_id=_string(_required(data, "record_id", path), _at(path, "record_id")),
    )


def _validity(value: object, path: str) -> records_pb2.Validity:
    data = _object(value, path, frozenset({"not_before", "not_after"}))
    validity = records_pb2.Validity()
    if "not_before" in data:
        validity.not_before.CopyFrom(_time(data["not_before"], _at(path, "not_before")))
    if "not_after" in data:
        validity.not_after.CopyFrom(_time(data["not_after"], _at(path, "not_after")))
    return validity


def _marking(value: object, path: str) -> records_pb2.Marking:
    data = _object(value, path, frozenset({"classification", "releasable_to", "tlp", "caveats"}))
    return records_pb2.Marking(
        classification=_string(_required(data, "classification", path), _at(path, "classification")),
        releasable_to=_strings(data.get("releasable_to", []), _at(path, "releasable_to")),
        tlp=_string(_required(data, "tlp", path), _at(path, "tlp")),
        caveats=_strings(data.get("caveats", []), _at(path, "caveats")),
    )


def _kind(value: object, path: str) -> records_pb2.Kind:
    if not isinstance(value, str) or value not in KINDS:
        raise InvalidInput(path, f"expected one of {', '.join(KINDS)}")
    return KINDS[value]


def _confidence(value: object, path: str) -> int:
    # bool is an int in Python; `true` is not a confidence.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _UINT32_MAX:
        raise InvalidInput(path, "expected a non-negative whole number")
    return value


def _translation(value: object, path: str) -> records_pb2.Translation:
    data = _object(value, path, frozenset({"language", "title", "summary"}))
    return records_pb2.Translation(
        language=_string(_required(data, "language", path), _at(path, "language")),
        title=_string(data.get("title", ""), _at(path, "title")),
        summary=_string(data.get("summary", ""), _at(path, "summary")),
    )


_LISTS = ("countries", "sectors", "tags")
_TOP_LEVEL = frozenset(
    {"kind", "title", "summary", "observables", "related", "confidence", "validity", "reference", "marking",
     "translations"}
    | set(_LISTS)
)


def draft_from_json(data: object) -> tuple[records_pb2.RecordDraft, str]:
    """The draft and the analyst's reference ("" if none) from parsed JSON."""
    if not isinstance(data, dict):
        raise InvalidInput("", "expected a JSON object at the top level")
    top = _object(data, "", _TOP_LEVEL)
    draft = records_pb2.RecordDraft(
        kind=_kind(_required(top, "kind", ""), "kind"),
        title=_string(_required(top, "title", ""), "title"),
        summary=_string(top.get("summary", ""), "summary"),
        observables=_list(top.get("observables", []), "observables", _observable),
        related=_list(top.get("related", []), "related", _ref),
        confidence=_confidence(top.get("confidence", 0), "confidence"),
        marking=_marking(_required(top, "marking", ""), "marking"),
        translations=_list(top.get("translations", []), "translations", _translation),
    )
    for name in _LISTS:
        getattr(draft, name).extend(_strings(top.get(name, []), name))
    if "validity" in top:
        draft.validity.CopyFrom(_validity(top["validity"], "validity"))
    reference = _string(top.get("reference", ""), "reference")
    return draft, reference


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently; for a marking that could
    # quietly widen the audience, so a repeated key is an error.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def load_json(text: str, *, one_line: bool = False) -> object:
    """Parse JSON text, refusing repeated keys; errors say where (the column alone for one line)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        where = f"column {exc.colno}" if one_line else f"line {exc.lineno} column {exc.colno}"
        raise InvalidInput("", f"invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:
        # json recurses per nesting level; a hostile or broken file must not end in a traceback.
        raise InvalidInput("", "invalid JSON: nested too deeply") from None
    except ValueError as exc:  # a repeated key, or an integer too long to convert
        raise InvalidInput("", str(exc)) from None


# What `exchange get --json` prints for a record (exchange.render.held_to_json), so that
# its output, edited, is a revision `exchange revise` takes back.
_RECORD_KEYS = frozenset(
    {"ref", "version", "status", "created_at", "issued_at", "content", "retraction_reason",
     "received_from", "equivocated", "expired", "not_yet_valid", "translation"}
)
_KIND_BY_ENUM_NAME = {records_pb2.Kind.Name(value): name for name, value in KINDS.items()}


def _version(value: object, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _UINT32_MAX:
        raise InvalidInput(path, "expected a positive whole number")
    return value


def revision_from_json(data: object) -> tuple[records_pb2.RecordRef | None, int | None, records_pb2.RecordDraft]:
    """A revision from parsed JSON: a draft as ``submit`` takes it (no ref, no version), or a
    record as ``get --json`` prints it, whose ``content`` is the draft and whose ``ref`` and
    ``version`` say what it revises."""
    if not (isinstance(data, dict) and "content" in data):
        draft, _reference = draft_from_json(data)  # a revision keeps its record; a reference names a new one
        return None, None, draft
    top = _object(data, "", _RECORD_KEYS)
    ref = _ref(_required(top, "ref", ""), "ref")
    version = _version(_required(top, "version", ""), "version")
    content = dict(_object(top["content"], "content", _TOP_LEVEL - {"reference"}))
    kind = content.get("kind")
    if isinstance(kind, str) and kind in _KIND_BY_ENUM_NAME:
        content["kind"] = _KIND_BY_ENUM_NAME[kind]  # get --json writes the enum's name, KIND_ACTOR
    try:
        draft, _ = draft_from_json(content)
    except InvalidInput as exc:
        raise InvalidInput(_at("content", exc.field), exc.problem) from None
    return ref, version, draft


def draft_label(name: str) -> str:
    """How errors name a draft file given on the command line."""
    return "<stdin>" if name == "-" else name


def _read_json(name: str, parse: Callable[[object], T]) -> T:
    """Read a JSON file ("-" for standard input) and ``parse`` it; errors name the file."""
    label = draft_label(name)
    raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(label, f"not UTF-8 text (byte {exc.start})") from None
    try:
        return parse(load_json(text))
    except InvalidInput as exc:
        raise InvalidInput(f"{label}: {exc.field}" if exc.field else label, exc.problem) from None


def read_draft(name: str) -> tuple[records_pb2.RecordDraft, str]:
    """Read a draft file ("-" for standard input); errors name the file."""
    return _read_json(name, draft_from_json)


def read_revision(name: str) -> tuple[records_pb2.RecordRef | None, int | None, records_pb2.RecordDraft]:
    """Read a revision: a draft file, or a record as ``get --json`` printed it (see ``revision_from_json``)."""
    return _read_json(name, revision_from_json)
