"""What an operator watches: security events (refused entries, equivocation) and the
quarantine of entries refused on receipt (kept by hash with the reason, never the content)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select

from exchange.store.schema import quarantine as quarantine_table
from exchange.store.schema import security_events as events_table
from exchange.store.store import Store, now_us

__all__ = ["Quarantined", "SecurityEvent", "quarantine_entry", "quarantined", "security_event", "security_events"]


@dataclass(frozen=True)
class SecurityEvent:
    id: int
    at: int  # microseconds since the epoch
    kind: str  # e.g. "equivocation", "refused-invalid", "refused-not-holdable"
    peer: str
    detail: str  # JSON, as stored


@dataclass(frozen=True)
class Quarantined:
    """An entry refused on receipt: its hash and the reason, not its content."""

    id: int
    at: int  # microseconds since the epoch
    peer: str
    content_hash: bytes
    reason: str


def security_event(tx: Connection, kind: str, peer: str, detail: dict[str, Any]) -> None:
    """Raise a security event inside the caller's write transaction."""
    tx.execute(
        insert(events_table).values(
            at=now_us(), kind=kind, peer=peer, detail=json.dumps(detail, ensure_ascii=False, sort_keys=True)
        )
    )


def quarantine_entry(tx: Connection, peer: str, content_hash: bytes, reason: str) -> None:
    """Keep a refused entry's hash and the reason, inside the caller's write transaction."""
    tx.execute(insert(quarantine_table).values(at=now_us(), peer=peer, content_hash=content_hash, reason=reason))


def security_events(store: Store) -> list[SecurityEvent]:
    """Every security event, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(events_table).order_by(events_table.c.id)).all()
    return [SecurityEvent(id=r.id, at=r.at, kind=r.kind, peer=r.peer, detail=r.detail) for r in rows]


def quarantined(store: Store) -> list[Quarantined]:
    """Every quarantined entry, oldest first."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(quarantine_table).order_by(quarantine_table.c.id)).all()
    return [Quarantined(id=r.id, at=r.at, peer=r.peer, content_hash=bytes(r.content_hash), reason=r.reason)
            for r in rows]
