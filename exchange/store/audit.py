"""The hash-chained audit log of submissions and disclosures.

Entry n stores hash(n) = SHA-256(hash(n-1) || canonical JSON of its fields);
the head (last seq and hash) is also kept in ``meta``. Editing a row breaks
its hash, deleting one breaks the chain or the head, so ``exchange audit
verify`` detects either. (Someone able to rewrite the whole chain and the head
is not stopped by this; anchoring the head elsewhere is a later step.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from exchange.store.engine import serialise_audit
from exchange.store.schema import audit, meta
from exchange.store.store import Store, now_us

GENESIS = b"\x00" * 32
HEAD_KEY = "audit_head"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: int  # microseconds since the epoch
    actor: str
    action: str
    detail: dict[str, Any]


def entry_hash(prev_hash: bytes, seq: int, at: int, actor: str, action: str, detail: str) -> bytes:
    body = json.dumps([seq, at, actor, action, detail], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(prev_hash + body.encode("utf-8")).digest()


def _read_head(conn: Connection) -> tuple[int, bytes]:
    row = conn.execute(select(meta.c.value).where(meta.c.key == HEAD_KEY)).scalar_one_or_none()
    if row is None:
        return 0, GENESIS
    return int.from_bytes(row[:8], "big"), row[8:]


def append(conn: Connection, *, at: int, actor: str, action: str, detail: dict[str, Any]) -> int:
    """Append one entry inside the caller's (write) transaction; returns its seq.

    Takes the audit chain's lock first (PostgreSQL): appends are serialised, and the head
    read here is the last committed one.
    """
    serialise_audit(conn)
    last_seq, last_hash = _read_head(conn)
    seq = last_seq + 1
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = entry_hash(last_hash, seq, at, actor, action, text)
    conn.execute(
        audit.insert().values(
            seq=seq, at=at, actor=actor, action=action, detail=text, prev_hash=last_hash, hash=digest
        )
    )
    head = seq.to_bytes(8, "big") + digest
    if last_seq == 0 and last_hash == GENESIS:
        conn.execute(meta.insert().values(key=HEAD_KEY, value=head))
    else:
        conn.execute(meta.update().where(meta.c.key == HEAD_KEY).values(value=head))
    return seq


def verify(conn: Connection) -> list[str]:
    """Every inconsistency in the chain, in order; an empty list means intact."""
    problems: list[str] = []
    expected_seq, prev = 1, GENESIS
    for row in conn.execute(select(audit).order_by(audit.c.seq)):
        if row.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {row.seq})")
        if row.prev_hash != prev:
            problems.append(f"entry {row.seq} does not chain to the entry before it")
        if entry_hash(row.prev_hash, row.seq, row.at, row.actor, row.action, row.detail) != row.hash:
            problems.append(f"entry {row.seq} was altered (its hash does not match its content)")
        expected_seq, prev = row.seq + 1, row.hash
    head_seq, head_hash = _read_head(conn)
    if (head_seq, head_hash) != (expected_seq - 1, prev):
        problems.append(f"the chain ends at entry {expected_seq - 1} but the recorded head is entry {head_seq}")
    return problems


def entries(conn: Connection, *, action: str | None = None) -> Iterator[AuditEntry]:
    query = select(audit).order_by(audit.c.seq)
    if action is not None:
        query = query.where(audit.c.action == action)
    for row in conn.execute(query):
        yield AuditEntry(row.seq, row.at, row.actor, row.action, json.loads(row.detail))


# --- over a store ------------------------------------------------------------------------------


def record(store: Store, *, actor: str, action: str, detail: dict[str, Any]) -> int:
    """Append one entry in a transaction of its own (a disclosure: see ``Store.write(audit_only=True)``)."""
    with store.write(audit_only=True) as tx:
        return append(tx, at=now_us(), actor=actor, action=action, detail=detail)


def verify_store(store: Store) -> list[str]:
    """Every inconsistency in the store's chain, in order (:func:`verify`)."""
    with store.engine.connect() as conn:
        return verify(conn)


def read_entries(store: Store, action: str | None = None) -> list[AuditEntry]:
    """The store's entries, oldest first (of ``action`` only, if given)."""
    with store.engine.connect() as conn:
        return list(entries(conn, action=action))
