"""The current version of each record, and its index rows.

One row per record (``records``) points at the log entry of the version shown; the
index tables (countries, sectors, observables, text terms) are rewritten with it. The
write functions run inside a caller's :meth:`~exchange.store.store.Store.write`
transaction; the reads leave out every entry signed with a key the store distrusts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, delete, func, insert, select, update

from exchange.core.marking import Marking
from exchange.errors import Conflict
from exchange.store import integrity, sealcheck
from exchange.store.engine import lookup_each
from exchange.store.rows import by_position, clear_index, current_values, next_id, raise_seq_floor, write_index
from exchange.store.schema import log, records
from exchange.store.store import Store
from exchange.v1 import records_pb2

__all__ = [
    "StoredRecord",
    "current_record",
    "current_records",
    "held_by_originator",
    "index_record",
    "insert_current",
    "reevaluate_holdings",
    "replace_current",
    "seal_problems",
    "sealed",
    "sealed_values",
    "select_current",
    "select_current_of",
    "to_record",
    "unindex_record",
]


@dataclass(frozen=True)
class StoredRecord:
    """The current version of a record as held, with what the decision needs."""

    rid: int
    originator: str
    record_id: str
    version: int
    status: str
    kind: str
    marking: Marking
    title: str
    summary: str
    issued_at: int
    envelope: bytes  # serialised Envelope, verbatim
    received_from: str
    received_at: int
    equivocated: bool

    @property
    def position(self) -> tuple[int, int]:
        """Sort key of search results (newest first)."""
        return (self.issued_at, self.rid)


def _split(value: str) -> frozenset[str]:
    return frozenset(value.split())


# The columns of a select_current row a StoredRecord is made of, in _record's order.
_RECORD_COLUMNS = (
    "rid", "originator", "record_id", "version", "status", "kind", "classification", "releasable_to", "tlp",
    "caveats", "title", "summary", "issued_at", "envelope", "received_from", "received_at", "equivocated",
)


def _record(values: tuple[Any, ...]) -> StoredRecord:
    (rid, originator, record_id, version, status, kind, classification, releasable_to, tlp, caveats, title, summary,
     issued_at, envelope, received_from, received_at, equivocated) = values
    return StoredRecord(rid, originator, record_id, version, status, kind,
                        Marking(classification, _split(releasable_to), tlp, _split(caveats)), title, summary,
                        issued_at, envelope, received_from, received_at, bool(equivocated))


def to_record(row: Any) -> StoredRecord:
    """A row of a :func:`select_current` query as the record it holds."""
    return _record(by_position(tuple(row._fields), _RECORD_COLUMNS)(row))


def select_current(store: Store) -> Select[Any]:
    """Current versions with their envelopes; entries signed with a distrusted key left out.

    The query the reads build on (search, watch hits): its rows become records through
    :func:`to_record`.
    """
    return select_current_of(bool(store.distrusted_keys), store.distrusted_keys)


def select_current_of(distrusted: bool, key_ids: Any) -> Select[Any]:
    """``select_current``, leaving out the entries signed with ``key_ids`` if ``distrusted``:
    a collection of key ids, or a bound parameter that will hold them (exchange/store/search.py)."""
    query = select(
        records,
        log.c.envelope,
        log.c.received_from,
        log.c.received_at,
        # What the log entry's seal covers (integrity.Integrity.current_problem).
        *(log.c[name].label("log_" + name) for name in (
            "payload_type", "key_id", "audience", "classification", "releasable_to", "tlp", "caveats",
            "content_hash", "mac")),
    ).join(log, log.c.seq == records.c.seq)
    if distrusted:
        query = query.where(log.c.key_id.not_in(key_ids))
    return query


def current_record(store: Store, originator: str, record_id: str) -> StoredRecord | None:
    query = select_current(store).where(records.c.originator == originator, records.c.record_id == record_id)
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None or not store.seal.served(originator, record_id, store.seal.current_problem(row)):
        return None  # integrity: an edited row is never served
    return to_record(row)


def current_records(store: Store, originator: str, record_ids: Iterable[str]) -> dict[str, StoredRecord]:
    """:func:`current_record` of many of one originator's records in one query a few hundred:
    each one held and sealed as written, by record id (the others are left out)."""
    wanted = sorted(set(record_ids))
    found: dict[str, StoredRecord] = {}
    with store.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        for start in range(0, len(wanted), 500):  # bound the statement's parameters
            chunk = wanted[start:start + 500]
            if postgres:
                # One lookup by key per record (engine.lookup_each says why).
                query = lookup_each(chunk, select_current(store).where(records.c.originator == originator),
                                    records.c.record_id)
            else:
                query = select_current(store).where(records.c.originator == originator,
                                                    records.c.record_id.in_(chunk))
            found.update((record.record_id, record) for record in sealed(store, conn.execute(query)))
    return found


def sealed(store: Store, rows: Iterable[Any]) -> Iterator[StoredRecord]:
    """The rows of a :func:`select_current` query whose seals match, as records; an edited
    row is never served (and is reported once: integrity.Integrity.served). ``rows`` are of
    one query (their values are read by the positions of the first row's columns)."""
    fields: tuple[str, ...] = ()
    for row in rows:
        if not fields:  # the rows of one query share their columns
            fields = tuple(row._fields)
            values = by_position(fields, _RECORD_COLUMNS)
            checked_values = by_position(fields, integrity.CURRENT_CHECKED)
        checked = checked_values(row)
        if store.seal.served(checked[0], checked[1], store.seal.current_checked_problem(checked)):
            yield _record(values(row))


def sealed_values(tx: Connection, record: records_pb2.Record, seq: int) -> dict[str, Any]:
    """A current-version row's values with its seal (integrity: sealed where written)."""
    values = current_values(record, seq)
    values["mac"] = integrity.of(tx).records_mac_of(record.ref.originator, record.ref.record_id, values)
    return values


def seal_problems(store: Store) -> list[str]:
    """Every row whose seal does not match, naming its record (what ``exchange audit verify``
    reports besides the chain: exchange/store/sealcheck.py)."""
    with store.engine.connect() as conn:
        return sealcheck.problems(conn, select_current(store), store.seal)


def held_by_originator(store: Store) -> dict[str, int]:
    """How many records are held (current versions), by originator."""
    with store.engine.connect() as conn:
        # Served from the unique (originator, record_id) index; no table scan of the rows.
        rows = conn.execute(select(records.c.originator, func.count()).group_by(records.c.originator))
        return {str(originator): int(count) for originator, count in rows}


# --- writes, inside the caller's write transaction ------------------------------------------


def insert_current(tx: Connection, record: records_pb2.Record, seq: int) -> int:
    """Make the version at log ``seq`` the current one of a record not held yet; returns its rid."""
    rid = next_id(tx, records.c.rid)
    tx.execute(
        insert(records).values(
            rid=rid,
            originator=record.ref.originator,
            record_id=record.ref.record_id,
            **sealed_values(tx, record, seq),
        )
    )
    return rid


def replace_current(tx: Connection, record: records_pb2.Record, seq: int, base: int) -> int:
    """Make the version at log ``seq`` current if version ``base`` still is (else Conflict)."""
    # Compare-and-set on the version: of two revisions of the same base, only
    # one can match; the other finds zero rows and loses (ABORTED).
    result = tx.execute(
        update(records)
        .where(
            records.c.originator == record.ref.originator,
            records.c.record_id == record.ref.record_id,
            records.c.version == base,
        )
        .values(**sealed_values(tx, record, seq))
        .returning(records.c.rid)
    )
    rid = result.scalar_one_or_none()
    if rid is None:
        raise Conflict(f"version {base} is no longer the current version")
    return int(rid)


def index_record(tx: Connection, rid: int, record: records_pb2.Record) -> None:
    """Rewrite the index rows of record ``rid`` for the version now current."""
    clear_index(tx, [rid])
    write_index(tx, [(rid, record)])


def unindex_record(tx: Connection, rid: int) -> None:
    clear_index(tx, [rid])


def reevaluate_holdings(store: Store, may_hold: Callable[[str, Marking], bool]) -> int:
    """After a manifest change: forget every received record this node may no longer hold.

    Its log rows are deleted outright (not marked purged, as after a withdrawal), so
    a later manifest that entitles this node again lets a repair fetch it afresh.
    Returns how many records were dropped.
    """
    dropped = 0
    with store.write() as tx:
        raise_seq_floor(tx)  # a partner's cursor may point past the entries deleted below
        rows = tx.execute(
            select(records.c.rid, records.c.originator, records.c.record_id, records.c.classification,
                   records.c.releasable_to, records.c.tlp, records.c.caveats)
            .where(records.c.originator != store.agency)
        ).all()
        for row in rows:
            marking = Marking(row.classification, _split(row.releasable_to), row.tlp, _split(row.caveats))
            if may_hold(row.originator, marking):
                continue
            unindex_record(tx, row.rid)
            tx.execute(delete(records).where(records.c.rid == row.rid))
            tx.execute(delete(log).where(log.c.originator == row.originator, log.c.record_id == row.record_id))
            dropped += 1
    return dropped
