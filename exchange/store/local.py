"""The node's own writes: a version it just signed, stored with its audit entry in one transaction.

An analyst's reference (their own name for a submission) is kept beside the record it
made, so a submission sent twice stores one record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from exchange.errors import Conflict, InternalError
from exchange.records.envelope import content_hash
from exchange.store import audit as audit_log
from exchange.store import integrity
from exchange.store.bulk import insert_many
from exchange.store.current import index_record, insert_current, replace_current
from exchange.store.engine import lookup_each
from exchange.store.log import append_log
from exchange.store.rows import (
    CURRENT_COLUMNS,
    LOG_COLUMNS,
    current_row,
    log_row,
    marking_columns,
    next_id,
    next_received_at,
    next_seq,
    write_index,
)
from exchange.store.schema import log, records, references
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2

__all__ = ["LocalWrite", "Withdrawal", "find_reference", "find_references", "put_local", "put_local_many",
           "write_local"]


@dataclass(frozen=True)
class Withdrawal:
    """A signed withdrawal to append, and the earlier audience it is routed to."""

    message: records_pb2.Withdrawal
    envelope: records_pb2.Envelope
    audience: frozenset[str]


def find_reference(store: Store, submitter: str, reference: str) -> str | None:
    """The record id ``submitter``'s ``reference`` made, if any."""
    with store.engine.connect() as conn:
        return _reference(conn, store.agency, submitter, reference)


def find_references(store: Store, submitter: str, names: Sequence[str]) -> dict[str, str]:
    """:func:`find_reference` of many references at once: the record id of each one known."""
    with store.engine.connect() as conn:
        found = _references(conn, store.agency, {(submitter, name) for name in names if name})
    return {name: record_id for (_, name), record_id in found.items()}


def _reference(conn: Connection, agency: str, submitter: str, reference: str) -> str | None:
    found: str | None = conn.execute(
        select(references.c.record_id).where(
            references.c.originator == agency,
            references.c.submitter == submitter,
            references.c.reference == reference,
        )
    ).scalar_one_or_none()
    return found


@dataclass(frozen=True)
class LocalWrite:
    """One version this node just signed, to store with its audit entry (see :func:`put_local`)."""

    record: records_pb2.Record
    envelope: records_pb2.Envelope
    actor: str
    action: str
    audience: frozenset[str]
    submitter: str = ""
    reference: str = ""
    base_version: int | None = None
    withdrawal: Withdrawal | None = None


def put_local(
    store: Store,
    record: records_pb2.Record,
    envelope: records_pb2.Envelope,
    *,
    actor: str,
    action: str,
    audience: frozenset[str],
    submitter: str = "",
    reference: str = "",
    base_version: int | None = None,
    withdrawal: Withdrawal | None = None,
) -> str | None:
    """Store a version this node just signed, with its audit entry, atomically.

    A new record (``base_version`` None) whose reference is already known
    is not stored: the existing record id is returned instead. A revision
    whose ``base_version`` is no longer current raises Conflict. A
    withdrawal of the earlier versions, when the version narrows its
    audience, is appended in the same transaction.
    """
    item = LocalWrite(record, envelope, actor, action, audience, submitter, reference, base_version, withdrawal)
    try:
        with store.write() as tx:
            return _write(tx, store.agency, item)
    except IntegrityError:
        # Lost a race: the same reference or version was written concurrently.
        if base_version is None and reference:
            existing = find_reference(store, submitter, reference)
            if existing is not None:
                return existing
        raise Conflict(f"version {record.version} of the record already exists") from None


def put_local_many(
    store: Store, items: Sequence[LocalWrite], *, also: Callable[[Connection], None] | None = None
) -> list[str | None]:
    """Store new records, each as :func:`put_local` would, all in ONE transaction: one commit
    (one fsync) for the lot instead of one each, and a crash keeps all of them or none.

    Returns, per item, the existing record id its reference already named (that item is not
    stored) or None. If the transaction loses a race with a concurrent write of the same
    reference, the whole lot is tried once more in one transaction (the references written
    meanwhile are then found and returned); losing again is a Conflict, with nothing stored.
    ``also`` writes more in the same transaction (SubmitBulk's drafts held for review).
    """
    if any(item.base_version is not None or item.withdrawal is not None for item in items):
        raise InternalError("put_local_many stores new records only")
    for attempt in range(2):
        try:
            with store.write() as tx:
                existing = _write_new(tx, store.agency, items)
                if also is not None:
                    also(tx)
                return existing
        except IntegrityError:
            if attempt:
                break
    raise Conflict("concurrent submissions of the same references: nothing of this call was stored; submit again")


def write_local(tx: Connection, agency: str, item: LocalWrite) -> str | None:
    """Write one item inside the caller's write transaction (a released draft, with its review
    rows in the same transaction); as :func:`put_local` does otherwise."""
    return _write(tx, agency, item)


def _write_new(tx: Connection, agency: str, items: Sequence[LocalWrite]) -> list[str | None]:
    """``_write`` of each new record, table by table: the references read in one query, each
    table's rows (sealed one by one, as ``_write`` seals them) inserted in one statement, and
    one audit entry per record appended in one extension of the chain."""
    known = _references(tx, agency, {(item.submitter, item.reference) for item in items if item.reference})
    existing: list[str | None] = []
    new: list[LocalWrite] = []
    for item in items:
        key = (item.submitter, item.reference)
        if item.reference and key in known:
            existing.append(known[key])  # also a reference a line before this one made
            continue
        if item.reference:
            known[key] = item.record.ref.record_id
        existing.append(None)
        new.append(item)
    if not new:
        return existing
    now = next_received_at(tx, now_us())  # each entry one microsecond after the one before (TAXII)
    seal = integrity.of(tx)
    first_seq = next_seq(tx)
    log_rows, digests = [], []
    for seq, item in enumerate(new, start=first_seq):
        record, envelope = item.record, item.envelope
        digest = content_hash(envelope.payload)
        digests.append(digest)
        row = log_row(record.ref, record.version, envelope, envelope.SerializeToString(), digest, agency,
                      now + seq - first_seq,
                      " ".join(sorted(item.audience)), marking_columns(record.content.marking))
        log_rows.append((seq, *row, seal.log_mac_of(seq, dict(zip(LOG_COLUMNS, row, strict=True)))))
    insert_many(tx, log, ("seq", *LOG_COLUMNS, "mac"), log_rows)
    first_rid = next_id(tx, records.c.rid)
    current_rows, indexing = [], []
    for offset, item in enumerate(new):
        rid, record = first_rid + offset, item.record
        row = current_row(record, first_seq + offset)
        ref = record.ref
        mac = seal.records_mac_of(ref.originator, ref.record_id, dict(zip(CURRENT_COLUMNS, row, strict=True)))
        current_rows.append((rid, ref.originator, ref.record_id, *row, mac))
        indexing.append((rid, record))
    insert_many(tx, records, ("rid", "originator", "record_id", *CURRENT_COLUMNS, "mac"), current_rows)
    insert_many(tx, references, ("originator", "submitter", "reference", "record_id"),
                [(agency, i.submitter, i.reference, i.record.ref.record_id) for i in new if i.reference])
    write_index(tx, indexing)
    audit_log.append_many(tx, at=now, entries=[
        (item.actor, item.action, {
            "originator": item.record.ref.originator, "record_id": item.record.ref.record_id,
            "version": item.record.version, "content_hash": digest.hex(),
        }) for item, digest in zip(new, digests, strict=True)
    ])
    return existing


def _references(tx: Connection, agency: str, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The record ids the (submitter, reference) pairs in ``wanted`` already made."""
    found: dict[tuple[str, str], str] = {}
    by_submitter: dict[str, list[str]] = {}
    for submitter, reference in wanted:
        by_submitter.setdefault(submitter, []).append(reference)
    postgres = tx.dialect.name == "postgresql"
    for submitter, names in by_submitter.items():
        for start in range(0, len(names), 500):  # bound the statement's parameters
            chunk = names[start:start + 500]
            if postgres:
                rows = tx.execute(lookup_each(chunk, select(references.c.reference, references.c.record_id).where(
                    references.c.originator == agency, references.c.submitter == submitter), references.c.reference))
            else:
                rows = tx.execute(select(references.c.reference, references.c.record_id).where(
                    references.c.originator == agency, references.c.submitter == submitter,
                    references.c.reference.in_(chunk),
                ))
            found.update(((submitter, row.reference), row.record_id) for row in rows)
    return found


def _write(
    tx: Connection, agency: str, item: LocalWrite, indexing: list[tuple[int, records_pb2.Record]] | None = None
) -> str | None:
    """Write one item; a new record's index rows are left to the caller if ``indexing`` is given."""
    record, envelope, reference = item.record, item.envelope, item.reference
    if item.base_version is None and reference:
        existing = _reference(tx, agency, item.submitter, reference)
        if existing is not None:
            return existing
    envelope_bytes = envelope.SerializeToString()
    digest = content_hash(envelope.payload)
    seq = append_log(
        tx, record.ref, record.version, envelope, envelope_bytes, digest, agency, item.audience,
        record.content.marking,
    )
    if item.withdrawal is not None:
        withdrawal = item.withdrawal
        append_log(
            tx, withdrawal.message.ref, withdrawal.message.version, withdrawal.envelope,
            withdrawal.envelope.SerializeToString(), content_hash(withdrawal.envelope.payload),
            agency, withdrawal.audience,
        )
    if item.base_version is None:
        rid = insert_current(tx, record, seq)
        if indexing is not None:
            indexing.append((rid, record))
        if reference:
            tx.execute(
                insert(references).values(
                    originator=agency, submitter=item.submitter, reference=reference, record_id=record.ref.record_id,
                )
            )
    else:
        rid = replace_current(tx, record, seq, item.base_version)
    if indexing is None or item.base_version is not None:
        index_record(tx, rid, record)
    audit_log.append(
        tx,
        at=now_us(),
        actor=item.actor,
        action=item.action,
        detail={
            "originator": record.ref.originator,
            "record_id": record.ref.record_id,
            "version": record.version,
            "content_hash": digest.hex(),
        },
    )
    return None
