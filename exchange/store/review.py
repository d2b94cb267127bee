"""Drafts held for release review, and officers' approvals (docs/design.md "Release review").

A held draft lives only in ``review_drafts``: not in ``log`` nor ``records``, which every
serving path (search, get, pull, digest, watch hits, export) reads, so no path can serve
it. It enters the log only when released, through the same write as any local version
(exchange/store/local.py), in the transaction that records the last approval.

Each row carries an HMAC under the node's integrity key: a draft edited in the database
after submission, or an approval planted there, is refused (never released, never counted).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from exchange.errors import Conflict, InternalError, NotFound
from exchange.store import audit as audit_log
from exchange.store import integrity
from exchange.store.local import LocalWrite, write_local
from exchange.store.schema import review_approvals, review_drafts
from exchange.store.store import Store, now_us

__all__ = ["DraftRow", "HeldWrite", "approve", "drafts", "find_held", "get_draft", "hold", "hold_in", "reject"]

HELD, RELEASED, REJECTED = "held", "released", "rejected"


@dataclass(frozen=True)
class HeldWrite:
    """A draft to hold: the record it makes (``record_id`` chosen now) and what it needs."""

    originator: str
    record_id: str
    base_version: int  # 0: a new record
    author: str  # the analyst's handle
    reference: str
    draft: bytes  # the serialised RecordDraft
    approvals_needed: int
    rule: str
    draft_id: str = ""
    # False: the author's reference already held a draft (a resubmission, or a race lost):
    # this is that draft, and nothing new was held. Not part of the seal.
    created: bool = True


@dataclass(frozen=True)
class DraftRow:
    draft_id: str
    originator: str
    record_id: str
    base_version: int
    author: str
    reference: str
    draft: bytes
    approvals_needed: int
    rule: str
    state: str
    reason: str
    submitted_at: int
    released_version: int | None
    approvals: tuple[tuple[str, int], ...]  # (officer handle, at), sealed ones only


def _draft_mac(seal: integrity.Integrity, row: HeldWrite | DraftRow) -> bytes:
    return seal.draft_mac(row.draft_id, row.originator, row.record_id, row.base_version, row.author, row.reference,
                          row.draft, row.approvals_needed)


def hold(store: Store, items: list[HeldWrite], *, actor: str) -> list[HeldWrite]:
    """Hold drafts, each with a 'review-hold' audit entry, in one transaction; returns them with their ids."""
    with store.write() as tx:
        return hold_in(tx, items, actor=actor)


def hold_in(tx: Connection, items: list[HeldWrite], *, actor: str) -> list[HeldWrite]:
    """:func:`hold` inside the caller's write transaction (SubmitBulk's, with the records it stores).

    An author's reference holds one draft at a time: the database enforces it (a unique index
    on author and reference over held drafts, migration 0011), so of concurrent submissions of
    one reference exactly one is held, and the others get that draft back (``created`` False).
    """
    held = []
    seal = integrity.of(tx)
    at = now_us()
    for item in items:
        item = HeldWrite(**{**item.__dict__, "draft_id": str(uuid.uuid4())})
        try:
            with tx.begin_nested():  # a lost race undoes this row only, not the caller's transaction
                tx.execute(insert(review_drafts).values(
                    draft_id=item.draft_id, originator=item.originator, record_id=item.record_id,
                    base_version=item.base_version, author=item.author, reference=item.reference,
                    draft=item.draft, approvals_needed=item.approvals_needed, rule=item.rule, state=HELD,
                    reason="", submitted_at=at, decided_at=None, released_version=None,
                    mac=_draft_mac(seal, item),
                ))
        except IntegrityError:
            existing = _held_by(tx, item.author, item.reference) if item.reference else None
            if existing is None:
                raise  # not the reference's index: a real failure
            held.append(HeldWrite(
                originator=existing.originator, record_id=existing.record_id, base_version=existing.base_version,
                author=existing.author, reference=existing.reference, draft=existing.draft,
                approvals_needed=existing.approvals_needed, rule=existing.rule, draft_id=existing.draft_id,
                created=False,
            ))
            continue
        audit_log.append(tx, at=at, actor=actor, action="review-hold", detail={
            "draft_id": item.draft_id, "originator": item.originator, "record_id": item.record_id,
            "base_version": item.base_version, "approvals_needed": item.approvals_needed, "rule": item.rule,
        })
        held.append(item)
    return held


def _held_by(conn: Connection, author: str, reference: str) -> DraftRow | None:
    draft_id = conn.execute(select(review_drafts.c.draft_id).where(
        review_drafts.c.author == author, review_drafts.c.reference == reference, review_drafts.c.state == HELD,
    ).limit(1)).scalar_one_or_none()
    return None if draft_id is None else _read(conn, draft_id)


def find_held(store: Store, author: str, reference: str) -> DraftRow | None:
    """The draft ``author``'s ``reference`` holds for review now, if any."""
    with store.engine.connect() as conn:
        return _held_by(conn, author, reference)


DRAFT_SEAL_PROBLEM = "held draft does not match its seal (edited in the database)"


def _read(conn: Connection, draft_id: str, *, report: bool = False) -> DraftRow | None:
    """The draft, with its sealed approvals; InternalError if its row does not match its seal
    (and, with ``report``, one integrity security event: not inside a write transaction,
    which the refusal rolls back)."""
    row = conn.execute(select(review_drafts).where(review_drafts.c.draft_id == draft_id)).first()
    if row is None:
        return None
    seal = integrity.of(conn)
    approvals = tuple(
        (a.officer, int(a.at))
        for a in conn.execute(select(review_approvals).where(review_approvals.c.draft_id == draft_id)
                              .order_by(review_approvals.c.at, review_approvals.c.officer))
        if bytes(a.mac) == seal.approval_mac(draft_id, a.officer, int(a.at))  # a planted row counts for nothing
    )
    found = DraftRow(
        draft_id=row.draft_id, originator=row.originator, record_id=row.record_id, base_version=row.base_version,
        author=row.author, reference=row.reference, draft=bytes(row.draft), approvals_needed=row.approvals_needed,
        rule=row.rule, state=row.state, reason=row.reason, submitted_at=int(row.submitted_at),
        released_version=row.released_version, approvals=approvals,
    )
    if bytes(row.mac) != _draft_mac(seal, found):
        if report and seal.reporter is not None:
            seal.reporter.report(found.originator, found.record_id, DRAFT_SEAL_PROBLEM)
        raise InternalError(f"draft {draft_id}: its row does not match its seal (edited in the database)")
    return found


def get_draft(store: Store, draft_id: str) -> DraftRow | None:
    with store.engine.connect() as conn:
        return _read(conn, draft_id, report=True)


def drafts(store: Store, *, author: str | None, states: tuple[str, ...]) -> list[DraftRow]:
    """Drafts in ``states`` (oldest first), of ``author`` only if given."""
    query = select(review_drafts.c.draft_id).where(review_drafts.c.state.in_(states))
    if author is not None:
        query = query.where(review_drafts.c.author == author)
    with store.engine.connect() as conn:
        ids = conn.execute(query.order_by(review_drafts.c.submitted_at, review_drafts.c.draft_id)).scalars().all()
        found = []
        for draft_id in ids:
            try:
                row = _read(conn, draft_id, report=True)
            except InternalError:
                continue  # never shown; release refuses it too (get_draft names it)
            if row is not None:
                found.append(row)
        return found


def approve(
    store: Store, draft_id: str, officer: str, *, actor: str, release: LocalWrite | None, release_version: int,
) -> DraftRow:
    """Record ``officer``'s approval; if that makes the approvals needed, write ``release`` (the
    signed version made from the draft) in the same transaction, so a draft is released once.

    Refuses (Conflict) a draft no longer held, a second approval by the same officer, and
    (from the local write) a revision whose base is no longer current: nothing is stored then.
    """
    with store.write() as tx:
        current = _read(tx, draft_id)
        if current is None:
            raise NotFound()
        if current.state != HELD:
            raise Conflict(f"draft {draft_id} is {current.state}, not held")
        if any(who == officer for who, _ in current.approvals):
            raise Conflict(f"you have already approved draft {draft_id}; another officer must approve it")
        at = now_us()
        try:
            with tx.begin_nested():
                tx.execute(insert(review_approvals).values(
                    draft_id=draft_id, officer=officer, at=at, mac=integrity.of(tx).approval_mac(draft_id, officer, at),
                ))
        except IntegrityError:
            raise Conflict(f"you have already approved draft {draft_id}") from None
        count = len(current.approvals) + 1
        audit_log.append(tx, at=at, actor=actor, action="review-approve", detail={
            "draft_id": draft_id, "originator": current.originator, "record_id": current.record_id,
            "approval": count, "approvals_needed": current.approvals_needed,
        })
        if count >= current.approvals_needed:
            if release is None:
                raise Conflict(f"draft {draft_id} gained approvals meanwhile: approve again")
            write_local(tx, store.agency, release)
            tx.execute(update(review_drafts).where(review_drafts.c.draft_id == draft_id).values(
                state=RELEASED, decided_at=at, released_version=release_version))
            approvers = sorted({who for who, _ in current.approvals} | {officer})
            audit_log.append(tx, at=at, actor=actor, action="review-release", detail={
                "draft_id": draft_id, "originator": current.originator, "record_id": current.record_id,
                "version": release_version, "author": current.author, "approved_by": approvers,
            })
        found = _read(tx, draft_id)
    if found is None:
        raise NotFound()
    return found


def reject(store: Store, draft_id: str, *, reason: str, actor: str) -> DraftRow:
    with store.write() as tx:
        current = _read(tx, draft_id)
        if current is None:
            raise NotFound()
        if current.state != HELD:
            raise Conflict(f"draft {draft_id} is {current.state}, not held")
        at = now_us()
        tx.execute(update(review_drafts).where(review_drafts.c.draft_id == draft_id).values(
            state=REJECTED, reason=reason, decided_at=at))
        audit_log.append(tx, at=at, actor=actor, action="review-reject", detail={
            "draft_id": draft_id, "originator": current.originator, "record_id": current.record_id,
            "reason": reason,
        })
        found = _read(tx, draft_id)
    if found is None:
        raise NotFound()
    return found
