"""The rows a record version becomes: its log entry, its current-version row, its index rows.

Shared by the node's own writes (``store.local.put_local``) and received batches
(``store.received``), so both index a record the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection, delete, func, select

from exchange.records import textindex
from exchange.records.normalize import normalize
from exchange.records.translations import searchable_text
from exchange.store import textsearch
from exchange.store.bulk import insert_many
from exchange.store.integrity import LOG_SEALED, RECORDS_SEALED, Integrity
from exchange.store.schema import log, meta, observables, record_countries, record_sectors
from exchange.v1 import records_pb2


def timestamp_us(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def timestamp_of(microseconds: int) -> Timestamp:
    """The protobuf Timestamp of a stored time in microseconds (the inverse of ``timestamp_us``)."""
    stamp = Timestamp()
    stamp.FromMicroseconds(microseconds)
    return stamp


_KIND_NAMES = {number: name.removeprefix("KIND_").lower() for name, number in records_pb2.Kind.items()}
_STATUS_NAMES = {number: name.removeprefix("STATUS_").lower() for name, number in records_pb2.Status.items()}


def kind_name(kind: int) -> str:
    """``KIND_OBSERVABLE_SET`` -> ``observable_set``; unknown numbers stay visible."""
    name = _KIND_NAMES.get(kind)
    return f"unknown-{kind}" if name is None else name


def status_name(status: int) -> str:
    name = _STATUS_NAMES.get(status)
    return f"unknown-{status}" if name is None else name


LOG_COLUMNS = (
    "originator", "record_id", "version", "content_hash", "payload_type", "key_id", "envelope", "received_from",
    "received_at", "audience", "classification", "releasable_to", "tlp", "caveats", "purged",
)
CURRENT_COLUMNS = (
    "version", "seq", "status", "kind", "classification", "releasable_to", "tlp", "caveats", "title",
    "summary", "created_at", "issued_at", "equivocated", "confidence", "valid_from", "valid_until",
)


# Where the sealed columns (integrity.LOG_SEALED, RECORDS_SEALED) sit in a row tuple of
# LOG_COLUMNS or CURRENT_COLUMNS: the bulk paths seal their tuples without making a dict of each.
_LOG_SEALED_AT = itemgetter(*(LOG_COLUMNS.index(c) for c in LOG_SEALED))
_RECORDS_SEALED_AT = itemgetter(*(CURRENT_COLUMNS.index(c) for c in RECORDS_SEALED))


def log_row_mac(seal: Integrity, seq: int, row: Sequence[Any]) -> bytes:
    """The seal of a log row given as a ``log_row`` tuple (``Integrity.log_mac_of`` of its values)."""
    return seal.log_mac(seq, *_LOG_SEALED_AT(row))


def current_row_mac(seal: Integrity, originator: str, record_id: str, row: Sequence[Any]) -> bytes:
    """The seal of a current-version row given as a ``current_row`` tuple."""
    return seal.records_mac(originator, record_id, *_RECORDS_SEALED_AT(row))


MarkingColumns = tuple[str, str, str, str]  # classification, releasable_to, tlp, caveats as stored


def marking_columns(marking: records_pb2.Marking | None) -> MarkingColumns:
    """A marking as its four columns (lists space-joined, sorted); empty for a withdrawal."""
    if marking is None:
        return ("", "", "", "")
    return (marking.classification, " ".join(sorted(marking.releasable_to)), marking.tlp,
            " ".join(sorted(marking.caveats)))


@functools.lru_cache(maxsize=64)
def by_position(fields: tuple[str, ...], names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """Reads ``names`` (two or more) of a result row with these column names (``row._fields``),
    by position, as a tuple in the order of ``names``. A SQLAlchemy Row looks an attribute up
    by name in about 0.4 µs: for every row a read checks and converts, a fifth of a lookup."""
    at = {name: i for i, name in enumerate(fields)}
    return itemgetter(*(at[name] for name in names))


def log_row(
    ref: records_pb2.RecordRef, version: int, envelope: records_pb2.Envelope, envelope_bytes: bytes,
    digest: bytes, received_from: str, received_at: int, audience: str, marking: MarkingColumns,
) -> tuple[Any, ...]:
    """A log row as a tuple in ``LOG_COLUMNS`` order (the bulk paths); ``audience`` joined."""
    return (ref.originator, ref.record_id, version, digest, envelope.payload_type, envelope.key_id,
            envelope_bytes, received_from, received_at, audience, *marking, False)


def log_values(
    ref: records_pb2.RecordRef, version: int, envelope: records_pb2.Envelope, envelope_bytes: bytes,
    digest: bytes, received_from: str, received_at: int, audience: frozenset[str],
    marking: records_pb2.Marking | None = None,
) -> dict[str, Any]:
    """A log row; ``marking`` is the version's own (None for a withdrawal)."""
    return dict(zip(LOG_COLUMNS, log_row(ref, version, envelope, envelope_bytes, digest, received_from,
                                          received_at, " ".join(sorted(audience)), marking_columns(marking)),
                    strict=True))


def current_row(record: records_pb2.Record, seq: int, marking: MarkingColumns | None = None) -> tuple[Any, ...]:
    """A current-version row as a tuple in ``CURRENT_COLUMNS`` order; ``marking`` if already
    computed (it is the record's own: ``marking_columns(record.content.marking)``)."""
    content = record.content
    created, issued = record.created_at, record.issued_at
    return (
        record.version, seq, status_name(record.status), kind_name(content.kind),
        *(marking or marking_columns(content.marking)), content.title, content.summary,
        created.seconds * 1_000_000 + created.nanos // 1000, issued.seconds * 1_000_000 + issued.nanos // 1000,
        False, *validity_columns(content),
    )


def validity_columns(content: records_pb2.RecordDraft) -> tuple[int, int | None, int | None]:
    """confidence, valid_from, valid_until (microseconds; None where the record sets no bound)."""
    validity = content.validity
    valid_from = timestamp_us(validity.not_before) if validity.HasField("not_before") else None
    valid_until = timestamp_us(validity.not_after) if validity.HasField("not_after") else None
    return int(content.confidence), valid_from, valid_until


def current_values(record: records_pb2.Record, seq: int) -> dict[str, Any]:
    return dict(zip(CURRENT_COLUMNS, current_row(record, seq), strict=True))


def observable_keys(content: records_pb2.RecordDraft) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for obs in content.observables:
        try:
            keys.add((obs.type, normalize(obs.type, obs.value)))
        except Exception:  # a partner's value our rules reject: still findable, folded
            keys.add((obs.type[:32], textindex.fold(obs.value)[:1024]))
    return keys


# meta key: the highest log seq ever allocated, when entries at the end were deleted.
LOG_SEQ_FLOOR = "log_seq_floor"


def next_seq(conn: Connection) -> int:
    """The next log seq: never one a partner's cursor may already have passed, even after
    entries at the end of the log were deleted (``raise_seq_floor``)."""
    floor = conn.execute(select(meta.c.value).where(meta.c.key == LOG_SEQ_FLOOR)).scalar_one_or_none()
    return max(next_id(conn, log.c.seq), int(floor or 0) + 1)


def next_received_at(conn: Connection, now: int) -> int:
    """The receipt time of the next log entry: ``now``, but always after the last entry's, so
    receipt times rise strictly with seq (entries of one batch take one microsecond each).
    TAXII's "date added" is this time, and a client that polls with ``added_after`` set to the
    last one it saw must neither miss an entry that shares it nor see one twice (exchange/node/taxii);
    read under the writers' lock, like the seq itself, so it is allocated in commit order."""
    last = conn.execute(select(log.c.received_at).order_by(log.c.seq.desc()).limit(1)).scalar_one_or_none()
    return now if last is None else max(now, int(last) + 1)


def raise_seq_floor(conn: Connection) -> None:
    """Before deleting log entries: remember the highest seq, so it is never allocated again."""
    top = next_seq(conn) - 1
    conn.execute(delete(meta).where(meta.c.key == LOG_SEQ_FLOOR))
    conn.execute(meta.insert().values(key=LOG_SEQ_FLOOR, value=str(top).encode()))


def next_id(conn: Connection, column: Any) -> int:
    """The next log seq or record rid: max + 1, read inside a write transaction, which holds
    the writers' lock (exchange/store/engine.py), so ids are allocated in commit order and
    one scheme serves local writes and received batches alike."""
    return int(conn.execute(select(func.coalesce(func.max(column), 0))).scalar_one()) + 1


# A record's observable keys and its text terms (sorted, space-joined: one string crosses a
# process boundary far cheaper than a set of them): the costly part of indexing it
# (normalisation, folding), computed by the checks of received records (exchange.sync).
RecordIndex = tuple[frozenset[tuple[str, str]], str]


def index_of(content: records_pb2.RecordDraft) -> RecordIndex:
    terms = textindex.index_terms(searchable_text(content))  # translations too
    return frozenset(observable_keys(content)), " ".join(sorted(terms))


def write_index(
    conn: Connection, items: Sequence[tuple[int, records_pb2.Record]],
    prepared: Mapping[int, RecordIndex] | None = None,
) -> None:
    """Index records (by rid) in bulk: countries, sectors, observables, text terms;
    ``prepared``: the ``index_of`` of some of them, by rid, computed already."""
    countries: list[tuple[int, str]] = []
    sectors: list[tuple[int, str]] = []
    keys: list[tuple[int, str, str, int, str]] = []
    words: list[tuple[int, str]] = []
    for rid, record in items:
        content = record.content
        countries += [(rid, c) for c in set(content.countries)]
        sectors += [(rid, s) for s in set(content.sectors)]
        issued_at, classification = timestamp_us(record.issued_at), content.marking.classification
        found = prepared.get(rid) if prepared else None
        observed, terms = found if found is not None else index_of(content)
        keys += [(rid, t, v, issued_at, classification) for t, v in observed]
        words.append((rid, terms))
    insert_many(conn, record_countries, ("rid", "country"), countries)
    insert_many(conn, record_sectors, ("rid", "sector"), sectors)
    insert_many(conn, observables, ("rid", "type", "value", "issued_at", "classification"), keys)
    textsearch.add(conn, words)


def clear_index(conn: Connection, rids: Sequence[int]) -> None:
    if not rids:
        return
    for table in (record_countries, record_sectors, observables):
        conn.execute(delete(table).where(table.c.rid.in_(rids)))
    textsearch.remove(conn, rids)
