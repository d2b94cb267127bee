"""Sightings: feedback on records, kept beside the log, and pulled as a stream of their own.

A node keeps the sightings its users reported on partners' records (``received_from``
is its own code; these are what ``PullSightings`` serves, oldest first by ``seq``) and
the sightings partners reported that it accepted (exchange/sync/sightings.py). Each is
the signed envelope verbatim; the columns beside it are copies of the signed payload
for lookups (by record, by verdict). As everywhere in ``exchange.store``, reads return
candidates: who may see a sighting is decided through ``exchange.core.policy``.

Sightings are not log entries: the log's digests, repair and withdrawal rules are about
record versions, and a sighting is none. A separate stream with its own cursor
(``sighting_peers``) keeps every guarantee of the log's pull: a batch is stored with
the cursor after it in one transaction, or not at all; and, like the log's cursor, the
one a node serves pins the database (the log epoch) and the rows it stopped at, so a
reporter restored from an older backup refuses the cursors it issued since, and the
puller starts over (sightings it holds are kept once) instead of missing what comes next.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, String, any_, bindparam, delete, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY

from exchange.store.events import security_event
from exchange.store.schema import audit, sighting_peers, sightings
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2

__all__ = [
    "VERDICTS",
    "Refused",
    "StoredSighting",
    "add_own",
    "apply_sightings",
    "counts",
    "fingerprints",
    "own_after",
    "own_end",
    "reset_cursor",
    "sighting_cursor",
    "sightings_on",
]

# Verdict enum values as stored (and shown): the proto's names without the prefix, lower case.
VERDICTS = {
    records_pb2.VERDICT_SEEN: "seen",
    records_pb2.VERDICT_CONFIRMED: "confirmed",
    records_pb2.VERDICT_FALSE_POSITIVE: "false_positive",
    records_pb2.VERDICT_RELAYED: "relayed",
}


@dataclass(frozen=True)
class StoredSighting:
    seq: int
    reporter: str
    verdict: str
    holder: str
    reported_at: int  # microseconds since the epoch
    envelope: bytes  # serialised Envelope, verbatim
    received_from: str
    received_at: int


@dataclass(frozen=True)
class Refused:
    """A served sighting this node refused: why, and what it claimed (never its note)."""

    reason: str
    detail: dict[str, str]


def _row(sighting: records_pb2.Sighting, envelope: bytes, received_from: str, at: int) -> dict[str, object]:
    return {
        "reporter": sighting.reporter, "sighting_id": sighting.sighting_id, "reported_by": sighting.reported_by,
        "originator": sighting.ref.originator, "record_id": sighting.ref.record_id,
        "record_version": sighting.record_version, "verdict": VERDICTS.get(sighting.verdict, "unknown"),
        "holder": sighting.holder, "reported_at": sighting.reported_at.ToMicroseconds(), "envelope": envelope,
        "received_from": received_from, "received_at": at,
    }


def add_own(store: Store, items: Sequence[tuple[records_pb2.Sighting, bytes]]) -> None:
    """Keep sightings this node signed (``bytes``: the serialised envelope), in one transaction."""
    if not items:
        return
    at = now_us()
    with store.write() as tx:
        tx.execute(insert(sightings), [_row(s, e, store.agency, at) for s, e in items])


def own_after(store: Store, after: int, limit: int) -> list[StoredSighting]:
    """This node's own sightings after ``seq`` ``after``, oldest first, at most ``limit``."""
    query = (select(sightings).where(sightings.c.seq > after, sightings.c.received_from == store.agency)
             .order_by(sightings.c.seq).limit(limit))
    with store.engine.connect() as conn:
        return [_stored(r) for r in conn.execute(query)]


def own_end(store: Store) -> int:
    """The last seq of the sightings table (a cursor that has seen everything up to now)."""
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(sightings.c.seq), 0))).scalar_one())


def fingerprints(store: Store, seq: int, audit_seq: int) -> tuple[bytes, bytes]:
    """What a sightings cursor pins: the first 8 bytes of SHA-256 of the own sighting at ``seq``
    and of the audit entry's hash at ``audit_seq`` (zeros where there is none). A database
    restored from an older backup has other rows there, or none, so a cursor issued before is
    recognised (exchange/node/sightings.py)."""
    none = b"\x00" * 8
    with store.engine.connect() as conn:
        envelope = conn.execute(select(sightings.c.envelope).where(sightings.c.seq == seq)).scalar_one_or_none() \
            if seq > 0 else None
        chained = conn.execute(select(audit.c.hash).where(audit.c.seq == audit_seq)).scalar_one_or_none() \
            if audit_seq > 0 else None
    return (none if envelope is None else hashlib.sha256(bytes(envelope)).digest()[:8],
            none if chained is None else hashlib.sha256(bytes(chained)).digest()[:8])


def _stored(row: Row[Any]) -> StoredSighting:
    return StoredSighting(int(row.seq), row.reporter, row.verdict, row.holder, int(row.reported_at),
                          bytes(row.envelope), row.received_from, int(row.received_at))


def sightings_on(store: Store, originator: str, record_id: str, *, relayed: bool = False) -> list[StoredSighting]:
    """Sightings held on one record, oldest first: people's (``relayed`` False) or relay reports."""
    query = select(sightings).where(sightings.c.originator == originator, sightings.c.record_id == record_id)
    query = query.where((sightings.c.verdict == "relayed") if relayed else (sightings.c.verdict != "relayed"))
    with store.engine.connect() as conn:
        return [_stored(r) for r in conn.execute(query.order_by(sightings.c.seq))]


# One statement for every page (the values bound): built per call, SQLAlchemy's statement
# construction and cache key were most of the counts' time on a page of search results.
# PostgreSQL takes the ids as one array, so the statement's text is the same for every page
# (an IN list of each length is another statement for SQLAlchemy to compile and cache).
_COUNTED = select(sightings.c.record_id, sightings.c.verdict, func.count()).group_by(
    sightings.c.record_id, sightings.c.verdict)
_COUNTS = _COUNTED.where(sightings.c.originator == bindparam("originator"),
                         sightings.c.record_id.in_(bindparam("ids", expanding=True)), sightings.c.verdict != "relayed")
_COUNTS_PG = _COUNTED.where(sightings.c.originator == bindparam("originator"),
                            sightings.c.record_id == any_(bindparam("ids", type_=ARRAY(String))),
                            sightings.c.verdict != "relayed")


def counts(store: Store, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Counter[str]]:
    """Per record, how many sightings of each verdict this node holds (relay reports aside)."""
    wanted = sorted(set(refs))
    found: dict[tuple[str, str], Counter[str]] = {}
    if not wanted:
        return found
    by_originator: dict[str, list[str]] = {}
    for originator, record_id in wanted:
        by_originator.setdefault(originator, []).append(record_id)
    with store.read() as conn:
        for originator, ids in by_originator.items():
            statement = _COUNTS_PG if conn.dialect.name == "postgresql" else _COUNTS
            for record_id, verdict, n in conn.execute(statement, {"originator": originator, "ids": ids}):
                found.setdefault((originator, record_id), Counter())[verdict] = int(n)
    return found


def sighting_cursor(store: Store, peer: str) -> bytes:
    with store.engine.connect() as conn:
        value = conn.execute(
            select(sighting_peers.c.cursor).where(sighting_peers.c.agency == peer)
        ).scalar_one_or_none()
    return b"" if value is None else bytes(value)


def reset_cursor(store: Store, peer: str) -> None:
    """Forget the cursor in ``peer``'s sightings (one it no longer accepts): pull from the start."""
    with store.write() as tx:
        tx.execute(delete(sighting_peers).where(sighting_peers.c.agency == peer))


def _save_cursor(tx: Connection, peer: str, cursor: bytes) -> None:
    tx.execute(delete(sighting_peers).where(sighting_peers.c.agency == peer))
    tx.execute(insert(sighting_peers).values(agency=peer, cursor=cursor))


def apply_sightings(
    store: Store, peer: str, accepted: Sequence[tuple[records_pb2.Sighting, bytes]], refused: Sequence[Refused],
    cursor: bytes,
) -> int:
    """Store one pulled batch of sightings, a security event per refused one, and the cursor
    after the batch, in one transaction; returns how many were new.

    A sighting already held (same reporter and id) is a duplicate: a batch served again
    after a crash changes nothing.
    """
    at = now_us()
    with store.write(durable=False) as tx:
        fresh = []
        seen: set[tuple[str, str]] = set()
        for sighting, envelope in accepted:
            key = (sighting.reporter, sighting.sighting_id)
            if key in seen:
                continue
            seen.add(key)
            held = tx.execute(select(sightings.c.seq).where(
                sightings.c.reporter == key[0], sightings.c.sighting_id == key[1])).first()
            if held is None:
                fresh.append(_row(sighting, envelope, peer, at))
        if fresh:
            tx.execute(insert(sightings), fresh)
        for refusal in refused:
            security_event(tx, "sighting-refused", peer, {"reason": refusal.reason, **refusal.detail})
        _save_cursor(tx, peer, cursor)
    return len(fresh)
