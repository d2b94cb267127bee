"""The durable outbox of watch hits to push (exchange/node/notify.py delivers them).

A hit is written once per (user, notify target, record version): the unique key makes
enqueuing idempotent, so finding the same hits again after a restart adds nothing.
A delivery is marked in one transaction with the audit entry that records it (the
hit is a disclosure to the user's agency's own system), so after any crash either
both are there or neither, and an entry not marked is sent again: the receiver sees
it at least once, and deduplicates on its idempotency key (``hit_key``) to see it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, select, update

from exchange.store import audit as audit_log
from exchange.store.bulk import insert_many
from exchange.store.schema import watch_notify_marks, watch_outbox
from exchange.store.store import Store, now_us

__all__ = ["NOTIFY_ACTION", "Pending", "delivered", "due", "enqueue", "failed", "hit_key", "marks", "pending_count",
           "prune"]

NOTIFY_ACTION = "watch_notify"  # audit action of one pushed hit

Hit = tuple[str, str, str, str, int]  # (owner, target, originator, record_id, version)


@dataclass(frozen=True)
class Pending:
    id: int
    owner: str
    target: str
    originator: str
    record_id: str
    version: int
    attempts: int
    last_error: str


def hit_key(agency: str, pending: Pending) -> str:
    """The idempotency key a receiver deduplicates on: stable across retries and restarts."""
    return f"{agency}/{pending.id}/{pending.originator}/{pending.record_id}/{pending.version}"


def marks(store: Store) -> dict[tuple[str, str], int]:
    """Per (user, target), the log position up to which hits were looked for."""
    with store.engine.connect() as conn:
        return {(r.owner, r.target): int(r.seq) for r in conn.execute(select(watch_notify_marks))}


def enqueue(store: Store, hits: Sequence[Hit], *, marks: Mapping[tuple[str, str], int] | None = None) -> int:
    """Add hits not queued before, and move the (user, target) ``marks`` forward, in one
    transaction (a crash keeps both or neither); returns how many hits were new."""
    if not hits and not marks:
        return 0
    now = now_us()
    with store.write() as tx:
        held = set()
        by_pair: dict[tuple[str, str], set[str]] = {}
        for owner, target, _, record_id, _ in hits:
            by_pair.setdefault((owner, target), set()).add(record_id)
        for (owner, target), ids in sorted(by_pair.items()):
            wanted = sorted(ids)
            for start in range(0, len(wanted), 500):  # only these hits' rows: the cost is what is new
                held |= {(owner, target, o, r, int(v)) for o, r, v in tx.execute(
                    select(watch_outbox.c.originator, watch_outbox.c.record_id, watch_outbox.c.version)
                    .where(watch_outbox.c.owner == owner, watch_outbox.c.target == target,
                           watch_outbox.c.record_id.in_(wanted[start:start + 500])))}
        fresh = sorted(set(hits) - held)
        insert_many(tx, watch_outbox, ("owner", "target", "originator", "record_id", "version", "created_at",
                                       "attempts", "next_at"),
                    [(*hit, now, 0, now) for hit in fresh])
        for (owner, target), seq in sorted((marks or {}).items()):
            moved = tx.execute(update(watch_notify_marks).where(
                watch_notify_marks.c.owner == owner, watch_notify_marks.c.target == target,
                watch_notify_marks.c.seq < seq).values(seq=seq))
            if not moved.rowcount and tx.execute(select(watch_notify_marks.c.seq).where(
                    watch_notify_marks.c.owner == owner, watch_notify_marks.c.target == target)).first() is None:
                tx.execute(watch_notify_marks.insert().values(owner=owner, target=target, seq=seq))
    return len(fresh)


def prune(store: Store, *, delivered_before: int) -> int:
    """Delete hits delivered before ``delivered_before``; returns how many.

    Only rows whose (user, target) has a mark: the mark was moved past the hit when it was
    queued, so it is never found and queued again (a row without one, from before marks,
    stays until its pair has one)."""
    marked = exists().where(watch_notify_marks.c.owner == watch_outbox.c.owner,
                            watch_notify_marks.c.target == watch_outbox.c.target)
    with store.write() as tx:
        return int(tx.execute(delete(watch_outbox).where(
            watch_outbox.c.delivered_at.is_not(None), watch_outbox.c.delivered_at < delivered_before,
            marked)).rowcount)


def due(store: Store, *, limit: int, now: int | None = None) -> list[Pending]:
    """Undelivered hits whose next attempt is due, oldest first."""
    at = now_us() if now is None else now
    query = (select(watch_outbox).where(and_(watch_outbox.c.delivered_at.is_(None), watch_outbox.c.next_at <= at))
             .order_by(watch_outbox.c.id).limit(limit))
    with store.engine.connect() as conn:
        return [Pending(int(r.id), r.owner, r.target, r.originator, r.record_id, int(r.version), int(r.attempts),
                        r.last_error or "") for r in conn.execute(query)]


def delivered(store: Store, pending: Pending, *, key: str, sent: bool) -> None:
    """Mark delivered, with its audit entry, in one transaction. ``sent`` False: dropped
    unsent (the record is no longer the user's to see), audited as such."""
    with store.write() as tx:
        marked = tx.execute(update(watch_outbox).where(
            watch_outbox.c.id == pending.id, watch_outbox.c.delivered_at.is_(None)).values(delivered_at=now_us()))
        if marked.rowcount:
            audit_log.append(tx, at=now_us(), actor=pending.owner, action=NOTIFY_ACTION, detail={
                "target": pending.target, "key": key, "sent": sent,
                "records": [[pending.originator, pending.record_id, pending.version]] if sent else [],
            })


def failed(store: Store, pending: Pending, *, error: str, retry_at: int) -> None:
    with store.write() as tx:
        tx.execute(update(watch_outbox).where(watch_outbox.c.id == pending.id).values(
            attempts=pending.attempts + 1, next_at=retry_at, last_error=error[:500]))


def pending_count(store: Store) -> int:
    with store.engine.connect() as conn:
        return len(conn.execute(select(watch_outbox.c.id).where(watch_outbox.c.delivered_at.is_(None))).all())
