"""Validation of what analysts submit. Every refusal names the field.

Structure is checked here, before the node signs anything; the rules that
need the store (links to related records) are checked by the service.
"""

from __future__ import annotations

import re
import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from exchange.config import Limits
from exchange.core.identity import AGENCY_RE
from exchange.core.marking import CAVEATS, TLP_LABELS, classification_level
from exchange.errors import InvalidInput, clip
from exchange.records.normalize import normalize
from exchange.records.translations import validate_translations
from exchange.v1 import records_pb2

MAX_TITLE_CHARS = 300
MAX_SUMMARY_CHARS = 20_000
MAX_TAGS = 64
MAX_LIST = 64  # countries, sectors
_COUNTRY_RE = re.compile(r"^[A-Z]{3}$")
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
# C0/C1 controls other than tab and newline have no place in text people read.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# Timestamps a store can hold as microseconds in 64 bits, with room to spare.
MIN_SECONDS, MAX_SECONDS = 0, 253_402_300_799  # 1970-01-01 .. 9999-12-31


def validate_timestamp(ts: Timestamp, field: str) -> None:
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidInput(field, "out of range (1970-01-01 to 9999-12-31)")


def validate_ref(ref: records_pb2.RecordRef, field: str) -> None:
    if not AGENCY_RE.match(ref.originator):
        raise InvalidInput(f"{field}.originator", f"malformed agency code {clip(ref.originator)!r}")
    validate_record_id(ref.record_id, f"{field}.record_id")


# The one form record ids take (what str(uuid.UUID(...)) gives): checked first, as it is on
# the path of every record received; anything else gets the precise refusal below.
_CANONICAL_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_record_id(record_id: str, field: str) -> None:
    if _CANONICAL_UUID_RE.fullmatch(record_id):
        return
    try:
        parsed = uuid.UUID(record_id)
    except ValueError:
        raise InvalidInput(field, f"not a UUID: {clip(record_id)!r}") from None
    if str(parsed) != record_id:
        raise InvalidInput(field, "record ids are lower-case hyphenated UUIDs")


def _text(value: str, field: str, limit: int, *, required: bool, multiline: bool) -> None:
    if required and not value.strip():
        raise InvalidInput(field, "missing")
    if len(value) > limit:
        raise InvalidInput(field, f"{len(value)} characters, over the limit of {limit}")
    check = value.replace("\n", "").replace("\t", "") if multiline else value
    if _CONTROL_RE.search(check):
        raise InvalidInput(field, "contains control characters")


def validate_marking(marking: records_pb2.Marking, field: str, partners: frozenset[str]) -> None:
    if not marking.classification:
        raise InvalidInput(f"{field}.classification", "missing")
    if classification_level(marking.classification) is None:
        raise InvalidInput(f"{field}.classification", f"unknown classification {clip(marking.classification)!r}")
    if not marking.tlp:
        raise InvalidInput(f"{field}.tlp", "missing")
    if marking.tlp not in TLP_LABELS:
        raise InvalidInput(f"{field}.tlp", f"unknown TLP label {clip(marking.tlp)!r}")
    for i, caveat in enumerate(marking.caveats):
        if caveat not in CAVEATS:
            raise InvalidInput(f"{field}.caveats[{i}]", f"unknown caveat {clip(caveat)!r}")
    seen: set[str] = set()
    for i, agency in enumerate(marking.releasable_to):
        if agency not in partners:
            raise InvalidInput(f"{field}.releasable_to[{i}]", f"{clip(agency)!r} is not a partner agency")
        if agency in seen:
            raise InvalidInput(f"{field}.releasable_to[{i}]", f"{agency} is listed twice")
        seen.add(agency)


def validate_draft(draft: records_pb2.RecordDraft, *, partners: frozenset[str], limits: Limits) -> None:
    """Raise InvalidInput naming the first bad field of ``draft``."""
    if draft.kind not in (
        records_pb2.KIND_ACTOR,
        records_pb2.KIND_TECHNIQUE,
        records_pb2.KIND_OBSERVABLE_SET,
    ):
        raise InvalidInput("draft.kind", "expected actor, technique or observable_set")
    _text(draft.title, "draft.title", MAX_TITLE_CHARS, required=True, multiline=False)
    _text(draft.summary, "draft.summary", MAX_SUMMARY_CHARS, required=False, multiline=True)
    validate_translations(draft.translations, "draft.translations", max_title=MAX_TITLE_CHARS,
                          max_summary=MAX_SUMMARY_CHARS)
    for i, translation in enumerate(draft.translations):
        _text(translation.title, f"draft.translations[{i}].title", MAX_TITLE_CHARS, required=False, multiline=False)
        _text(translation.summary, f"draft.translations[{i}].summary", MAX_SUMMARY_CHARS, required=False,
              multiline=True)
    if not draft.HasField("marking"):
        raise InvalidInput("draft.marking", "missing")
    validate_marking(draft.marking, "draft.marking", partners)
    for name, values, pattern in (
        ("countries", draft.countries, _COUNTRY_RE),
        ("sectors", draft.sectors, _SLUG_RE),
        ("tags", draft.tags, _SLUG_RE),
    ):
        limit = MAX_TAGS if name == "tags" else MAX_LIST
        if len(values) > limit:
            raise InvalidInput(f"draft.{name}", f"{len(values)} entries, over the limit of {limit}")
        for i, value in enumerate(values):
            if not pattern.match(value):
                expected = "an ISO 3166-1 alpha-3 code" if name == "countries" else "a lower-case slug"
                raise InvalidInput(f"draft.{name}[{i}]", f"expected {expected}, got {clip(value)!r}")
    if len(draft.observables) > limits.max_observables:
        raise InvalidInput(
            "draft.observables",
            f"{len(draft.observables)} observables, over the limit of {limits.max_observables}",
        )
    for i, obs in enumerate(draft.observables):
        normalize(obs.type, obs.value, field=f"draft.observables[{i}]")
    if len(draft.related) > limits.max_related:
        raise InvalidInput("draft.related", f"{len(draft.related)} links, over the limit of {limits.max_related}")
    for i, ref in enumerate(draft.related):
        validate_ref(ref, f"draft.related[{i}]")
    if draft.confidence > 100:
        raise InvalidInput("draft.confidence", f"expected 0..100, got {draft.confidence}")
    validity = draft.validity
    _validate_validity(validity, "draft.validity")
    if (
        validity.HasField("not_before")
        and validity.HasField("not_after")
        and validity.not_after.ToNanoseconds() <= validity.not_before.ToNanoseconds()
    ):
        raise InvalidInput("draft.validity", "not_after must be later than not_before")


def _validate_validity(validity: records_pb2.Validity, field: str) -> None:
    for name in ("not_before", "not_after"):
        if validity.HasField(name):
            validate_timestamp(getattr(validity, name), f"{field}.{name}")


def validate_reference(reference: str) -> None:
    _text(reference, "reference", 256, required=False, multiline=False)


MAX_VERSION = 2**31 - 1


def validate_received(record: records_pb2.Record, *, limits: Limits, partners: frozenset[str]) -> None:
    """What a partner served must fit what the store keeps, or it is refused (not stored).

    The signature says who wrote it, not that it is well formed: an originator's node
    with a bug (or a thief with its key) must not be able to block a batch. And every
    rule a submission here obeys applies to it too (this node's limits, not the
    originator's): a partner can't make this node hold what its own analysts couldn't.
    """
    validate_ref(record.ref, "record.ref")
    if not 1 <= record.version <= MAX_VERSION:
        raise InvalidInput("record.version", f"out of range: {record.version}")
    for name in ("created_at", "issued_at"):
        validate_timestamp(getattr(record, name), f"record.{name}")
    _validate_validity(record.content.validity, "record.content.validity")
    if record.status not in (records_pb2.STATUS_ACTIVE, records_pb2.STATUS_RETRACTED):
        raise InvalidInput("record.status", f"unknown status {record.status}")
    content = record.content
    for name, value, limit in (
        ("title", content.title, MAX_TITLE_CHARS), ("summary", content.summary, MAX_SUMMARY_CHARS),
        ("marking.classification", content.marking.classification, 32), ("marking.tlp", content.marking.tlp, 16),
    ):
        if len(value) > limit:
            raise InvalidInput(f"record.content.{name}", f"over {limit} characters")
    for name, values in (("countries", content.countries), ("sectors", content.sectors)):
        if len(values) > MAX_LIST or any(len(v) > 64 for v in values):
            raise InvalidInput(f"record.content.{name}", "too many or too long")
    _local_rules(record, limits=limits, partners=partners)


def _local_rules(record: records_pb2.Record, *, limits: Limits, partners: frozenset[str]) -> None:
    """The submission rules (``validate_draft``), named as the received record's fields."""
    content = record.content
    try:
        if record.status == records_pb2.STATUS_ACTIVE:
            validate_draft(content, partners=partners, limits=limits)
        else:  # a retraction carries only the kind and the marking (exchange.node.submission)
            validate_marking(content.marking, "draft.marking", partners)
            if len(content.observables) > limits.max_observables or len(content.related) > limits.max_related:
                raise InvalidInput("draft", "a retraction over the observable or link limits")
    except InvalidInput as error:
        raise InvalidInput("record.content" + error.field.removeprefix("draft"), error.problem) from None


def validate_received_withdrawal(withdrawal: records_pb2.Withdrawal) -> None:
    validate_ref(withdrawal.ref, "withdrawal.ref")
    if not 1 <= withdrawal.version <= MAX_VERSION:
        raise InvalidInput("withdrawal.version", f"out of range: {withdrawal.version}")
