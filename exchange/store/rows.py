"""The rows a record version becomes: its log entry, its current-version row, its index rows.

Shared by the node's own writes (``store.Store.put_local``) and received batches
(``store.received``), so both index a record the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, delete

from exchange.records import textindex
from exchange.records.normalize import normalize
from exchange.store import textsearch
from exchange.store.schema import observables, record_countries, record_sectors
from exchange.v1 import records_pb2


def timestamp_us(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def kind_name(kind: int) -> str:
    """``KIND_OBSERVABLE_SET`` -> ``observable_set``; unknown numbers stay visible."""
    try:
        return records_pb2.Kind.Name(kind).removeprefix("KIND_").lower()
    except ValueError:
        return f"unknown-{kind}"


def status_name(status: int) -> str:
    try:
        return records_pb2.Status.Name(status).removeprefix("STATUS_").lower()
    except ValueError:
        return f"unknown-{status}"


LOG_COLUMNS = (
    "originator", "record_id", "version", "content_hash", "payload_type", "key_id", "envelope", "received_from",
    "received_at", "audience", "classification", "releasable_to", "tlp", "caveats", "purged",
)
CURRENT_COLUMNS = (
    "version", "seq", "status", "kind", "classification", "releasable_to", "tlp", "caveats", "title",
    "summary", "created_at", "issued_at", "equivocated",
)


def log_values(
    ref: records_pb2.RecordRef, version: int, envelope: records_pb2.Envelope, envelope_bytes: bytes,
    digest: bytes, received_from: str, received_at: int, audience: frozenset[str],
    marking: records_pb2.Marking | None = None,
) -> dict[str, Any]:
    """A log row; ``marking`` is the version's own (None for a withdrawal)."""
    return {
        "originator": ref.originator,
        "record_id": ref.record_id,
        "version": version,
        "content_hash": digest,
        "payload_type": envelope.payload_type,
        "key_id": envelope.key_id,
        "envelope": envelope_bytes,
        "received_from": received_from,
        "received_at": received_at,
        "audience": " ".join(sorted(audience)),
        "classification": marking.classification if marking else "",
        "releasable_to": " ".join(sorted(marking.releasable_to)) if marking else "",
        "tlp": marking.tlp if marking else "",
        "caveats": " ".join(sorted(marking.caveats)) if marking else "",
        "purged": False,
    }


def current_values(record: records_pb2.Record, seq: int) -> dict[str, Any]:
    content = record.content
    marking = content.marking
    return {
        "version": record.version,
        "seq": seq,
        "status": status_name(record.status),
        "kind": kind_name(content.kind),
        "classification": marking.classification,
        "releasable_to": " ".join(sorted(marking.releasable_to)),
        "tlp": marking.tlp,
        "caveats": " ".join(sorted(marking.caveats)),
        "title": content.title,
        "summary": content.summary,
        "created_at": timestamp_us(record.created_at),
        "issued_at": timestamp_us(record.issued_at),
        "equivocated": False,
    }


def observable_keys(content: records_pb2.RecordDraft) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for obs in content.observables:
        try:
            keys.add((obs.type, normalize(obs.type, obs.value)))
        except Exception:  # a partner's value our rules reject: still findable, folded
            keys.add((obs.type[:32], textindex.fold(obs.value)[:1024]))
    return keys


def insert_many(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """One executemany of plain tuples: the bulk paths' rows skip SQLAlchemy's per-row work."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})",
        list(rows),
    )


def write_index(conn: Connection, items: Sequence[tuple[int, records_pb2.Record]]) -> None:
    """Index records (by rid) in bulk: countries, sectors, observables, text terms."""
    countries: list[tuple[int, str]] = []
    sectors: list[tuple[int, str]] = []
    keys: list[tuple[int, str, str, int]] = []
    words: list[tuple[int, set[str]]] = []
    for rid, record in items:
        content = record.content
        countries += [(rid, c) for c in set(content.countries)]
        sectors += [(rid, s) for s in set(content.sectors)]
        issued_at = timestamp_us(record.issued_at)
        keys += [(rid, t, v, issued_at) for t, v in observable_keys(content)]
        words.append((rid, textindex.index_terms(content.title + "\n" + content.summary)))
    insert_many(conn, record_countries, ("rid", "country"), countries)
    insert_many(conn, record_sectors, ("rid", "sector"), sectors)
    insert_many(conn, observables, ("rid", "type", "value", "issued_at"), keys)
    textsearch.add(conn, words)


def clear_index(conn: Connection, rids: Sequence[int]) -> None:
    if not rids:
        return
    for table in (record_countries, record_sectors, observables):
        conn.execute(delete(table).where(table.c.rid.in_(rids)))
    textsearch.remove(conn, rids)
