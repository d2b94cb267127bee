"""Applying what a partner served: versions, duplicates, equivocation, withdrawals.

One batch and the cursor after it are applied in one transaction (DESIGN.md
"Sync"), so an interrupted pull resumes without loss or duplication. The
rules, in the order they are checked for a record version:

1. a version below a withdrawal we hold is not accepted again;
2. the same (originator, record_id, version, content hash) is a duplicate: nothing changes;
3. the same version with another content hash, both validly signed, is
   equivocation: both envelopes are kept as evidence, a security event is
   raised, the record shows its last unequivocal version, flagged;
4. a higher version supersedes; a lower one is kept in the log but never
   replaces the current one (no rollback).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from exchange.records.envelope import RECORD_TYPE
from exchange.store.schema import log, peers, quarantine, records, security_events, withdrawn
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2


@dataclass(frozen=True)
class Incoming:
    """A verified entry: a record version the node may hold, or a withdrawal."""

    envelope: records_pb2.Envelope
    content_hash: bytes
    audience: frozenset[str]
    record: records_pb2.Record | None = None
    withdrawal: records_pb2.Withdrawal | None = None


@dataclass(frozen=True)
class Refusal:
    """An entry refused on receipt: only its hash and the reason are kept."""

    content_hash: bytes
    reason: str
    violation: bool  # the partner served something we may not hold: a rule broken


@dataclass
class BatchReport:
    stored: int = 0
    duplicates: int = 0
    older: int = 0
    equivocations: int = 0
    withdrawals: int = 0
    refused: int = 0
    events: list[str] = field(default_factory=list)


def security_event(conn: Connection, kind: str, peer: str, detail: dict[str, Any]) -> None:
    conn.execute(
        insert(security_events).values(
            at=now_us(), kind=kind, peer=peer, detail=json.dumps(detail, ensure_ascii=False, sort_keys=True)
        )
    )


def apply_batch(
    store: Store, peer: str, entries: list[Incoming | Refusal], cursor: bytes | None
) -> BatchReport:
    """Apply one pulled batch and store the cursor after it, atomically."""
    report = BatchReport()
    with store.engine.execution_options(exchange_write=True).begin() as conn:
        for entry in entries:
            if isinstance(entry, Refusal):
                _refuse(conn, peer, entry, report)
            elif entry.withdrawal is not None:
                _apply_withdrawal(conn, peer, entry, entry.withdrawal, report)
            else:
                assert entry.record is not None
                _apply_version(conn, peer, entry, entry.record, report)
        if cursor is not None:
            save_cursor(conn, peer, cursor)
    return report


def save_cursor(conn: Connection, peer: str, cursor: bytes) -> None:
    now = now_us()
    updated = conn.execute(
        update(peers).where(peers.c.agency == peer).values(cursor=cursor, last_success=now, last_error=None)
    )
    if updated.rowcount == 0:
        conn.execute(insert(peers).values(agency=peer, cursor=cursor, last_success=now, last_attempt=now))


def _refuse(conn: Connection, peer: str, refusal: Refusal, report: BatchReport) -> None:
    conn.execute(
        insert(quarantine).values(at=now_us(), peer=peer, content_hash=refusal.content_hash, reason=refusal.reason)
    )
    kind = "refused-not-holdable" if refusal.violation else "refused-invalid"
    security_event(conn, kind, peer, {"content_hash": refusal.content_hash.hex(), "reason": refusal.reason})
    report.refused += 1
    report.events.append(kind)


def _withdrawn_below(conn: Connection, ref: records_pb2.RecordRef) -> int:
    value = conn.execute(
        select(withdrawn.c.below_version).where(
            withdrawn.c.originator == ref.originator, withdrawn.c.record_id == ref.record_id
        )
    ).scalar_one_or_none()
    return int(value or 0)


def _apply_version(
    conn: Connection, peer: str, entry: Incoming, record: records_pb2.Record, report: BatchReport
) -> None:
    ref, version = record.ref, record.version
    if version < _withdrawn_below(conn, ref):  # rule 1
        report.older += 1
        return
    same_version = conn.execute(
        select(log.c.content_hash).where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version == version,
            log.c.payload_type == RECORD_TYPE,
        )
    ).scalars().all()
    if entry.content_hash in {bytes(h) for h in same_version}:  # rule 2
        report.duplicates += 1
        return
    seq = Store._append_log(
        conn, ref, version, entry.envelope, entry.envelope.SerializeToString(), entry.content_hash, peer,
        entry.audience,
    )
    current = conn.execute(
        select(records.c.rid, records.c.version).where(
            records.c.originator == ref.originator, records.c.record_id == ref.record_id
        )
    ).first()
    if same_version:  # rule 3
        report.equivocations += 1
        report.events.append("equivocation")
        security_event(conn, "equivocation", peer, {
            "originator": ref.originator, "record_id": ref.record_id, "version": version,
            "content_hashes": sorted([bytes(h).hex() for h in same_version] + [entry.content_hash.hex()]),
        })
        if current is not None and current.version == version:
            _show_last_unequivocal(conn, current.rid, ref, version)
        return
    if current is None:
        rid = Store._insert_current(conn, record, seq)
    elif version > current.version:  # rule 4
        rid = current.rid
        conn.execute(
            update(records).where(records.c.rid == rid).values(**Store._current_values(record, seq))
        )
    else:
        report.older += 1  # kept in the log, never shown in place of a newer version
        return
    Store._index(conn, rid, record)
    report.stored += 1


def _show_last_unequivocal(conn: Connection, rid: int, ref: records_pb2.RecordRef, version: int) -> None:
    """Point the record at the newest held version below ``version``, flagged."""
    earlier = conn.execute(
        select(log.c.seq, log.c.envelope).where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version < version,
            log.c.payload_type == RECORD_TYPE, log.c.purged.is_(False),
        ).order_by(log.c.version.desc()).limit(1)
    ).first()
    if earlier is not None:
        record = records_pb2.Record.FromString(records_pb2.Envelope.FromString(earlier.envelope).payload)
        conn.execute(update(records).where(records.c.rid == rid).values(**Store._current_values(record, earlier.seq)))
        Store._index(conn, rid, record)
    conn.execute(update(records).where(records.c.rid == rid).values(equivocated=True))


def _apply_withdrawal(
    conn: Connection, peer: str, entry: Incoming, message: records_pb2.Withdrawal, report: BatchReport
) -> None:
    ref, version = message.ref, message.version
    exists = conn.execute(
        select(log.c.seq).where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version == version,
            log.c.content_hash == entry.content_hash,
        )
    ).first()
    if exists is not None:
        report.duplicates += 1
        return
    # Kept in the log so it is relayed to every earlier audience, whatever the caveats.
    Store._append_log(
        conn, ref, version, entry.envelope, entry.envelope.SerializeToString(), entry.content_hash, peer,
        entry.audience,
    )
    purge_below(conn, ref, version)
    report.withdrawals += 1


def purge_below(conn: Connection, ref: records_pb2.RecordRef, version: int) -> None:
    """Purge the payloads of versions below ``version``; drop the record if nothing newer is held."""
    if version > _withdrawn_below(conn, ref):
        conn.execute(delete(withdrawn).where(
            withdrawn.c.originator == ref.originator, withdrawn.c.record_id == ref.record_id))
        conn.execute(insert(withdrawn).values(
            originator=ref.originator, record_id=ref.record_id, below_version=version))
    conn.execute(
        update(log)
        .where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version < version,
            log.c.payload_type == RECORD_TYPE,
        )
        .values(envelope=b"", purged=True)
    )
    current = conn.execute(
        select(records.c.rid, records.c.version).where(
            records.c.originator == ref.originator, records.c.record_id == ref.record_id
        )
    ).first()
    if current is not None and current.version < version:
        Store._unindex(conn, current.rid)
        conn.execute(delete(records).where(records.c.rid == current.rid))
