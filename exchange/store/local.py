"""The node's own writes: a version it just signed, stored with its audit entry in one transaction.

An analyst's reference (their own name for a submission) is kept beside the record it
made, so a submission sent twice stores one record.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from exchange.errors import Conflict
from exchange.records.envelope import content_hash
from exchange.store import audit as audit_log
from exchange.store.current import index_record, insert_current, replace_current
from exchange.store.log import append_log
from exchange.store.schema import references
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2

__all__ = ["Withdrawal", "find_reference", "put_local"]


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


def _reference(conn: Connection, agency: str, submitter: str, reference: str) -> str | None:
    found: str | None = conn.execute(
        select(references.c.record_id).where(
            references.c.originator == agency,
            references.c.submitter == submitter,
            references.c.reference == reference,
        )
    ).scalar_one_or_none()
    return found


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
    envelope_bytes = envelope.SerializeToString()
    digest = content_hash(envelope.payload)
    try:
        with store.write() as tx:
            if base_version is None and reference:
                existing = _reference(tx, store.agency, submitter, reference)
                if existing is not None:
                    return existing
            seq = append_log(
                tx, record.ref, record.version, envelope, envelope_bytes, digest, store.agency, audience,
                record.content.marking,
            )
            if withdrawal is not None:
                append_log(
                    tx, withdrawal.message.ref, withdrawal.message.version, withdrawal.envelope,
                    withdrawal.envelope.SerializeToString(), content_hash(withdrawal.envelope.payload),
                    store.agency, withdrawal.audience,
                )
            if base_version is None:
                rid = insert_current(tx, record, seq)
                if reference:
                    tx.execute(
                        insert(references).values(
                            originator=store.agency,
                            submitter=submitter,
                            reference=reference,
                            record_id=record.ref.record_id,
                        )
                    )
            else:
                rid = replace_current(tx, record, seq, base_version)
            index_record(tx, rid, record)
            audit_log.append(
                tx,
                at=now_us(),
                actor=actor,
                action=action,
                detail={
                    "originator": record.ref.originator,
                    "record_id": record.ref.record_id,
                    "version": record.version,
                    "content_hash": digest.hex(),
                },
            )
    except IntegrityError:
        # Lost a race: the same reference or version was written concurrently.
        if base_version is None and reference:
            existing = find_reference(store, submitter, reference)
            if existing is not None:
                return existing
        raise Conflict(f"version {record.version} of the record already exists") from None
    return None
