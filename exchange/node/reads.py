"""What every read path for the node's own users shares: the decision, pages, tokens, audit.

Pages are filled only with records that passed :func:`exchange.core.policy.decide`,
and "is there a next page" is answered by finding one more such record, so neither
a page, a token nor its absence says anything about records the caller may not see.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BytesValue

from exchange.core.identity import Principal
from exchange.core.policy import decide
from exchange.errors import InvalidInput
from exchange.store import Store, StoredRecord, audit
from exchange.store import sightings as stored_sightings
from exchange.store.rows import timestamp_of
from exchange.v1 import records_pb2


class Agencies(Protocol):
    """What the decision reads of the manifest trusted now (a ``Manifest`` is one)."""

    @property
    def agencies(self) -> frozenset[str]: ...


def visible(agency: str, manifest: Agencies, record: StoredRecord, caller: Principal) -> bool:
    return decide(
        holder=agency, principal=caller, originator=record.originator, marking=record.marking,
        known_agencies=manifest.agencies,
    ).allowed


def page_size(requested: int, default: int, maximum: int) -> int:
    size = requested or default
    if size > maximum:
        raise InvalidInput("page_size", f"at most {maximum}")
    return size


def fill_page(
    candidates: Iterable[StoredRecord], agency: str, manifest: Agencies, caller: Principal, size: int
) -> tuple[list[StoredRecord], bool]:
    """The first ``size`` candidates the caller may see, and whether one more exists."""
    page: list[StoredRecord] = []
    for record in candidates:
        if not visible(agency, manifest, record, caller):
            continue
        if len(page) == size:
            return page, True
        page.append(record)
    return page, False


def token_context(kind: bytes, request: Message, caller: Principal) -> bytes:
    """Binds a page token to the caller and the request it was issued for (page fields aside)."""
    query = type(request)()
    query.CopyFrom(request)
    query.ClearField("page_token")
    query.ClearField("page_size")
    digest = hashlib.sha256(kind + b"\x00" + query.SerializeToString(deterministic=True)).digest()
    return caller.identity.uri.encode("utf-8") + b"\x00" + digest


def audit_disclosure(store: Store, caller: Principal, action: str, shown: list[StoredRecord]) -> None:
    audit_shown(store, caller, action, [(r.originator, r.record_id, r.version) for r in shown])


def audit_shown(store: Store, caller: Principal, action: str, shown: Sequence[tuple[str, str, int]]) -> None:
    """The disclosure of the records shown, each as (originator, record_id, version), to the audit chain."""
    if shown:
        audit.record(store, actor=caller.identity.uri, action=action,
                     detail={"records": [[originator, record_id, version] for originator, record_id, version in shown]})


def held_record(record: StoredRecord) -> records_pb2.HeldRecord:
    received = timestamp_of(record.received_at)
    return records_pb2.HeldRecord(
        envelope=records_pb2.Envelope.FromString(record.envelope),
        received_from=record.received_from,
        received_at=received,
        equivocated=record.equivocated,
    )


def held_records_wire(store: Store, agency: str, page: list[StoredRecord]) -> bytes:
    """The records as held (``held_record``), the own agency's with the sightings partners reported
    on them, serialised as field 1 of the answer: SearchResponse's ``records``, GetResponse's
    ``record``. Each envelope goes as the bytes stored (never parsed and serialised again: a
    page of 50 is 50 envelopes). The page has passed the decision; only the own node's users
    are ever served.

    Field 1 of HeldRecord (``envelope``) and of both answers is length-delimited, as is field 1
    of BytesValue: so ``BytesValue(value=b)`` serialises to exactly that field holding ``b``,
    and serialised messages concatenated are one message with all their fields.
    """
    counts = _sighting_counts(store, agency, page)
    parts = []
    for record in page:
        rest = records_pb2.HeldRecord(received_from=record.received_from, equivocated=record.equivocated)
        rest.received_at.FromMicroseconds(record.received_at)
        found = counts.get((record.originator, record.record_id))
        if found:
            rest.sightings.CopyFrom(_counts_message(found))
        held = BytesValue(value=record.envelope).SerializeToString() + rest.SerializeToString()
        parts.append(BytesValue(value=held).SerializeToString())
    return b"".join(parts)


def _sighting_counts(store: Store, agency: str, page: list[StoredRecord]) -> dict[tuple[str, str], Counter[str]]:
    return stored_sightings.counts(store, [(r.originator, r.record_id) for r in page if r.originator == agency])


def _counts_message(found: Counter[str]) -> records_pb2.SightingCounts:
    return records_pb2.SightingCounts(seen=found["seen"], confirmed=found["confirmed"],
                                      false_positive=found["false_positive"])
