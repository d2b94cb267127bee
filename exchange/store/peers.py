"""Where this node is in each partner's log: cursors, the outcome of pulls, repair flags."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from exchange.store.schema import log, meta, peers
from exchange.store.store import Store, now_us

__all__ = [
    "PeerState",
    "manifest_changed",
    "note_pull",
    "peer_cursor",
    "peer_needs_repair",
    "peer_states",
    "received_from",
    "save_cursor",
]


@dataclass(frozen=True)
class PeerState:
    """This node's state with one partner."""

    agency: str
    cursor: bytes  # opaque, the partner's; empty before the first batch
    last_success: int | None  # microseconds since the epoch
    last_attempt: int | None
    last_error: str | None
    needs_repair: bool  # the manifest changed: the next pull reconciles by digest first


def peer_cursor(store: Store, peer: str) -> bytes:
    with store.engine.connect() as conn:
        value = conn.execute(select(peers.c.cursor).where(peers.c.agency == peer)).scalar_one_or_none()
    return b"" if value is None else bytes(value)


def received_from(store: Store, peer: str) -> bool:
    """Whether any entry held came from ``peer`` (so an empty cursor means a lost one)."""
    with store.engine.connect() as conn:
        return conn.execute(select(log.c.seq).where(log.c.received_from == peer).limit(1)).first() is not None


def peer_needs_repair(store: Store, peer: str) -> bool:
    with store.engine.connect() as conn:
        value = conn.execute(select(peers.c.needs_repair).where(peers.c.agency == peer)).scalar_one_or_none()
    return bool(value)


def peer_states(store: Store) -> list[PeerState]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(peers).order_by(peers.c.agency)).all()
    return [
        PeerState(agency=r.agency, cursor=bytes(r.cursor), last_success=r.last_success, last_attempt=r.last_attempt,
                  last_error=r.last_error, needs_repair=bool(r.needs_repair))
        for r in rows
    ]


def manifest_changed(store: Store, version: int, partners: Iterable[str]) -> bool:
    """Record the manifest version in use; if it changed, flag every peer for repair."""
    with store.write() as tx:
        stored = tx.execute(select(meta.c.value).where(meta.c.key == "manifest_version")).scalar_one_or_none()
        if stored is not None and int(stored) == version:
            return False
        tx.execute(delete(meta).where(meta.c.key == "manifest_version"))
        tx.execute(insert(meta).values(key="manifest_version", value=str(version).encode()))
        if stored is None:
            return False  # first start: nothing held yet under another manifest
        for agency in partners:
            if tx.execute(update(peers).where(peers.c.agency == agency).values(needs_repair=True)).rowcount == 0:
                tx.execute(insert(peers).values(agency=agency, cursor=b"", needs_repair=True))
        return True


def note_pull(store: Store, peer: str, error: str | None) -> None:
    """Record the outcome of a pull attempt (the cursor itself moves with each batch)."""
    with store.write() as tx:
        values = {"last_attempt": now_us(), "last_error": error}
        if tx.execute(update(peers).where(peers.c.agency == peer).values(**values)).rowcount == 0:
            tx.execute(insert(peers).values(agency=peer, cursor=b"", **values))


def save_cursor(tx: Connection, peer: str, cursor: bytes, *, repaired: bool = False) -> None:
    """Store the cursor after a batch, inside the transaction that applies the batch."""
    now = now_us()
    values: dict[str, Any] = {"cursor": cursor, "last_success": now, "last_error": None}
    if repaired:
        values["needs_repair"] = False
    updated = tx.execute(update(peers).where(peers.c.agency == peer).values(**values))
    if updated.rowcount == 0:
        tx.execute(insert(peers).values(**{"agency": peer, "last_attempt": now, "needs_repair": False, **values}))
