"""The append-only log: every version and withdrawal held, in sequence order.

Partners pull it in chunks (:func:`log_after`), digests summarise it, cursors carry a
fingerprint of it (:func:`log_fingerprint`). Entries are appended (:func:`append_log`)
inside a caller's :meth:`~exchange.store.store.Store.write` transaction, which holds
the writers' lock, so sequence numbers commit in order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, and_, func, insert, or_, select

from exchange.core.marking import Marking
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE
from exchange.store import integrity
from exchange.store.integrity import LOG_SEALED
from exchange.store.rows import by_position, log_values, next_received_at, next_seq
from exchange.store.schema import log, records
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2

__all__ = [
    "LogEntry",
    "LogRow",
    "append_log",
    "earlier_audience",
    "log_after",
    "log_end",
    "log_entries",
    "log_fingerprint",
    "sealed_log_rows",
]


@dataclass(frozen=True)
class LogEntry:
    """One log entry with the marking of its record's current version."""

    seq: int
    originator: str
    record_id: str
    version: int
    content_hash: bytes
    envelope: bytes
    payload_type: str
    audience: frozenset[str]  # the version's own audience (for a withdrawal: every earlier one)
    version_marking: Marking | None  # the version's own marking (None for a withdrawal)
    current_marking: Marking | None  # None for a withdrawal, or a record no longer held

    @property
    def is_withdrawal(self) -> bool:
        return self.payload_type == WITHDRAWAL_TYPE


@dataclass(frozen=True)
class LogRow:
    """A log row as stored (for operators and tests): lists are space-joined, sorted."""

    seq: int
    originator: str
    record_id: str
    version: int
    content_hash: bytes
    payload_type: str
    key_id: str
    envelope: bytes  # empty once purged
    received_from: str
    received_at: int
    audience: str
    classification: str
    releasable_to: str
    tlp: str
    caveats: str
    purged: bool


def _split(value: str) -> frozenset[str]:
    return frozenset(value.split())


def log_fingerprint(store: Store, seq: int) -> bytes | None:
    """The first 8 bytes of the content hash at ``seq`` (None if there is no such entry)."""
    with store.engine.connect() as conn:
        value = conn.execute(select(log.c.content_hash).where(log.c.seq == seq)).scalar_one_or_none()
    return None if value is None else bytes(value[:8])


def log_end(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(log.c.seq), 0))).scalar_one())


def log_after(
    store: Store, after: int, *, upto: int | None = None, originator: str | None = None, id_prefix: str = "",
    chunk: int = 1000, include_purged: bool = False, audience_of: str | None = None,
) -> Iterator[LogEntry]:
    """Unpurged log entries with ``after`` < seq (<= ``upto``) in order, with their record's
    current marking; entries signed with a key the store distrusts are left out.

    ``include_purged`` adds the rows whose payload was purged (empty envelope): a
    repair must not fetch again what a withdrawal made us drop. ``audience_of`` skips,
    in SQL, entries whose audience cannot include that agency (rule 1 as a coarse
    prefilter, so a pull does not walk every entry it may not receive); whatever
    passes still goes through the disclosure decision.
    """
    query = (
        select(
            log.c.seq, log.c.originator, log.c.record_id, log.c.version, log.c.content_hash,
            log.c.envelope, log.c.payload_type, log.c.audience, records.c.classification,
            records.c.releasable_to, records.c.tlp, records.c.caveats,
            log.c.classification.label("v_classification"), log.c.releasable_to.label("v_releasable_to"),
            log.c.tlp.label("v_tlp"), log.c.caveats.label("v_caveats"),
            # What the seals cover besides (integrity.Integrity.entry_problem).
            log.c.key_id, log.c.received_from, log.c.received_at, log.c.purged, log.c.mac,
            records.c.version.label("r_version"),
            records.c.seq.label("r_seq"), records.c.status.label("r_status"), records.c.kind.label("r_kind"),
            records.c.mac.label("r_mac"),
        )
        .outerjoin(
            records, and_(records.c.originator == log.c.originator, records.c.record_id == log.c.record_id)
        )
    )
    if not include_purged:
        query = query.where(log.c.purged.is_(False))
    if store.distrusted_keys:
        query = query.where(log.c.key_id.not_in(store.distrusted_keys))
    if originator is not None:
        query = query.where(log.c.originator == originator)
    if id_prefix:
        query = query.where(log.c.record_id.startswith(id_prefix))
    if upto is not None:
        query = query.where(log.c.seq <= upto)
    if audience_of is not None:
        padded = f"% {audience_of} %"
        query = query.where(
            or_(
                log.c.originator == audience_of,
                # This version's own release list: a superset test is enough here (both
                # markings are judged by decide_version), and one LIKE is half the scan.
                and_(log.c.payload_type != WITHDRAWAL_TYPE, (" " + log.c.releasable_to + " ").like(padded)),
                and_(log.c.payload_type == WITHDRAWAL_TYPE, (" " + log.c.audience + " ").like(padded)),
            )
        )
    # Markings and audiences repeat from row to row: each distinct one is built once per
    # scan (equal values, so the decision's caches find them by hash cheaply too).
    @functools.lru_cache(maxsize=1024)
    def marking_of_row(classification: str, releasable_to: str, tlp: str, caveats: str) -> Marking:
        return Marking(classification, _split(releasable_to), tlp, _split(caveats))

    audience_of_row = functools.lru_cache(maxsize=1024)(_split)

    position = after
    while True:
        page = query.where(log.c.seq > position).order_by(log.c.seq).limit(chunk)
        # Walk the log in seq order and stop at ``chunk``: misled by the audience LIKE,
        # PostgreSQL fetched, joined and sorted every entry after the position instead, for
        # every chunk, quadratic on the server (80 ms a chunk at 50,000 entries).
        with store.walk() as conn:
            rows = conn.execute(page).all()
        if rows:  # the rows of one query share their columns
            checked = by_position(tuple(rows[0]._fields), integrity.ENTRY_CHECKED)
        for row in rows:
            (seq, originator, record_id, version, digest, envelope, payload_type, audience, classification,
             releasable_to, tlp, caveats, v_classification, v_releasable_to, v_tlp, v_caveats) = row[:16]
            if not store.seal.served(originator, record_id, store.seal.entry_checked_problem(checked(row))):
                continue  # integrity: an edited row is never served
            withdrawal = payload_type == WITHDRAWAL_TYPE
            yield LogEntry(
                seq=seq, originator=originator, record_id=record_id, version=version,
                content_hash=bytes(digest), envelope=bytes(envelope),
                payload_type=payload_type, audience=audience_of_row(audience),
                version_marking=None if withdrawal else marking_of_row(
                    v_classification, v_releasable_to, v_tlp, v_caveats),
                current_marking=None if classification is None or withdrawal else marking_of_row(
                    classification, releasable_to, tlp, caveats),
            )
        if len(rows) < chunk:
            return
        position = rows[-1].seq


def earlier_audience(store: Store, originator: str, record_id: str) -> frozenset[str]:
    """Every agency any held version of a record was released to.

    A row whose seal fails is left out (and reported): an edited audience must not route
    a withdrawal, and with it the record's existence, to an agency never released to.
    """
    with store.engine.connect() as conn:
        rows = conn.execute(sealed_log_rows(originator, record_id, RECORD_TYPE)).all()
    return frozenset(
        agency for row in rows if store.seal.served(originator, record_id, store.seal.log_row_problem(row))
        for agency in row.audience.split()
    )


def sealed_log_rows(originator: str, record_id: str, payload_type: str, *, below: int | None = None) -> Select[Any]:
    """A record's log rows of one payload type, with what their seals cover
    (``integrity.Integrity.log_row_problem``)."""
    query = select(log.c.seq, *(log.c[name] for name in LOG_SEALED), log.c.mac).where(
        log.c.originator == originator, log.c.record_id == record_id, log.c.payload_type == payload_type,
    )
    return query if below is None else query.where(log.c.version < below)


def log_entries(store: Store, originator: str, record_id: str) -> list[LogRow]:
    """Every log entry held for a record, oldest first (for operators and tests)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(log)
            .where(log.c.originator == originator, log.c.record_id == record_id)
            .order_by(log.c.seq)
        ).all()
    return [
        LogRow(
            seq=r.seq, originator=r.originator, record_id=r.record_id, version=r.version,
            content_hash=bytes(r.content_hash), payload_type=r.payload_type, key_id=r.key_id,
            envelope=bytes(r.envelope), received_from=r.received_from, received_at=r.received_at,
            audience=r.audience, classification=r.classification, releasable_to=r.releasable_to, tlp=r.tlp,
            caveats=r.caveats, purged=bool(r.purged),
        )
        for r in rows
    ]


def append_log(
    tx: Connection,
    ref: records_pb2.RecordRef,
    version: int,
    envelope: records_pb2.Envelope,
    envelope_bytes: bytes,
    digest: bytes,
    received_from: str,
    audience: frozenset[str],
    marking: records_pb2.Marking | None = None,
) -> int:
    """Append one entry inside the caller's write transaction; returns its seq.

    ``marking`` is the version's own (None for a withdrawal)."""
    seq = next_seq(tx)
    values = log_values(ref, version, envelope, envelope_bytes, digest, received_from, next_received_at(tx, now_us()),
                        audience, marking)
    values["mac"] = integrity.of(tx).log_mac_of(seq, values)  # integrity: sealed where written
    tx.execute(insert(log).values(seq=seq, **values))
    return seq
