"""The manifests this node has trusted: every version since the first, as received.

Documents are kept whole (signatures included) and are self-authenticating: the node
checks the chain again at every start (exchange/node/trusted.py), so this module only
keeps and finds them. The newest is what the node trusts; the older ones let a partner
that is several versions behind walk the chain (GetManifest).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from exchange.store.events import security_event
from exchange.store.schema import manifests
from exchange.store.store import Store, now_us

__all__ = ["StoredManifest", "keep_manifest", "manifest_event", "stored_manifests"]

MAX_SERVED_VERSIONS = 32  # versions in one GetManifest answer (a partner further behind asks again)


@dataclass(frozen=True)
class StoredManifest:
    version: int
    document: bytes
    adopted_at: int  # microseconds since the epoch
    source: str  # "file" or the partner it came from


def stored_manifests(store: Store, *, after: int = 0, limit: int | None = None) -> list[StoredManifest]:
    """Versions above ``after``, oldest first (at most ``limit``)."""
    query = select(manifests).where(manifests.c.version > after).order_by(manifests.c.version)
    if limit is not None:
        query = query.limit(limit)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [StoredManifest(r.version, bytes(r.document), r.adopted_at, r.source) for r in rows]


def keep_manifest(store: Store, version: int, document: bytes, source: str) -> bool:
    """Keep a version the node now trusts; False if that version is already kept."""
    with store.write() as tx:
        if _kept(tx, version):
            return False
        tx.execute(insert(manifests).values(version=version, document=document, adopted_at=now_us(),
                                            source=source[:160]))
    return True


def _kept(tx: Connection, version: int) -> bool:
    return tx.execute(select(manifests.c.version).where(manifests.c.version == version)).first() is not None


def manifest_event(store: Store, kind: str, peer: str, detail: dict[str, object]) -> None:
    """A refused manifest: one security event (kind ``manifest-<why>``)."""
    with store.write() as tx:
        security_event(tx, f"manifest-{kind}"[:32], peer, detail)
