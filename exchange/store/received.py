"""Applying what a partner served: versions, duplicates, equivocation, withdrawals.

One batch and the cursor after it are applied in one transaction (docs/design.md
"Sync"), so an interrupted pull resumes without loss or duplication. The
rules, in the order they are checked for a record version:

1. a version below a withdrawal we hold is not accepted again;
2. the same (originator, record_id, version, content hash) is a duplicate: nothing changes,
   unless it is signed with another key that ``supersedes`` the held one (a re-signed
   envelope, exchange/store/resign.py): the held envelope is replaced, the content kept;
   anything else of this node's own agency (a version or a withdrawal it did not make) is
   refused: only this node writes them, so it was signed by someone else holding its key;
3. the same version with another content hash, both validly signed, is
   equivocation: both envelopes are kept as evidence, a security event is
   raised, the record shows its last unequivocal version, flagged;
4. a higher version supersedes; a lower one is kept in the log but never
   replaces the current one (no rollback).

Entries signed with a key the store distrusts (marked compromised) decide nothing: a
withdrawal so signed blocks no version (rule 1) and a purged version it withdrew is refilled
by the same bytes re-signed (rule 2); a version so signed does not bar a lower one (rule 4),
and the newest version signed with a trusted key becomes current again (``_recover``). It
still counts as a rival (rule 3): that the originator did not sign it cannot be told. A
thief's withdrawal or version, taken before the key was known to be leaked, so never costs
a holder the genuine record once it is re-signed (docs/design.md "Signing").
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Text, and_, any_, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from exchange.errors import clip
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE
from exchange.store import integrity
from exchange.store.bulk import insert_many
from exchange.store.current import index_record, sealed_values, unindex_record
from exchange.store.log import append_log, sealed_log_rows
from exchange.store.peers import save_cursor
from exchange.store.refusals import Refusal, RefusalTally, excess_evidence, record_equivocation, record_refusals
from exchange.store.resign import Supersedes, replace_envelope
from exchange.store.rows import (
    CURRENT_COLUMNS,
    LOG_COLUMNS,
    MarkingColumns,
    RecordIndex,
    clear_index,
    current_row,
    current_row_mac,
    log_row,
    log_row_mac,
    marking_columns,
    next_id,
    next_received_at,
    next_seq,
    write_index,
)
from exchange.store.schema import log, records, withdrawn
from exchange.store.store import Store, now_us
from exchange.v1 import records_pb2

logger = logging.getLogger("exchange.sync")


@dataclass(frozen=True)
class Incoming:
    """A verified entry: a record version the node may hold, or a withdrawal."""

    envelope: records_pb2.Envelope
    content_hash: bytes
    audience: frozenset[str]
    record: records_pb2.Record | None = None
    withdrawal: records_pb2.Withdrawal | None = None
    index: RecordIndex | None = None  # the record's ``rows.index_of``, if the checks computed it


@dataclass
class BatchReport:
    stored: int = 0
    duplicates: int = 0
    resigned: int = 0  # held envelopes replaced by the same bytes under a newer key
    older: int = 0
    equivocations: int = 0
    withdrawals: int = 0
    refused: int = 0
    # Security events by kind, counted: a pull of a million refused entries is one entry here.
    events: Counter[str] = field(default_factory=Counter)


def apply_batch(
    store: Store, peer: str, entries: list[Incoming | Refusal], cursor: bytes | None, *, repaired: bool = False,
    tally: RefusalTally | None = None, supersedes: Supersedes | None = None,
) -> BatchReport:
    """Apply one pulled batch and store the cursor after it, atomically.

    Record versions are applied in bulk (a few statements per batch, not per
    record); withdrawals after them, which leaves the same state as applying
    in order because purging is monotonic. Should the bulk write fail on some
    entry the checks let through, the batch is applied again entry by entry,
    each in a savepoint, and the entries that cannot be stored are quarantined:
    one bad entry never blocks the rest of its batch.

    ``tally`` carries a pull's refusals from batch to batch, so they are aggregated
    per pull (``exchange.store.refusals``); without one, per batch. ``supersedes`` says
    whether a re-signed envelope replaces the one held (without it, never).
    """
    tally = tally or RefusalTally()
    # Entries of the store's own agency are refused from partners (rule 2); "received" from the
    # agency itself, they are its own (tests and tools store their records this way).
    own = store.agency if peer != store.agency else ""
    distrusted = store.distrusted_keys
    # Not durable: a batch lost to a power cut is lost with its cursor, so the next pull
    # fetches it again from the partner (Store.write says what SQLite does instead).
    try:
        with tally.transaction(), store.write(durable=False) as tx:
            report = apply_entries(tx, peer, entries, tally, supersedes, own=own, distrusted=distrusted)
            if cursor is not None:
                save_cursor(tx, peer, cursor, repaired=repaired)
        return report
    except (SQLAlchemyError, OverflowError, ValueError) as error:
        # The error's class and SQLSTATE only: its message can quote a value (PostgreSQL's
        # COPY context does), and record content never goes to the log.
        logger.warning("batch from %s failed in bulk (%s %s); applying entry by entry", peer,
                       type(error).__name__, getattr(getattr(error, "orig", None), "sqlstate", "") or "")
    with tally.transaction(), store.write(durable=False) as tx:
        report = BatchReport()
        unstorable: list[Refusal] = []
        for entry in entries:
            try:
                with tally.transaction(), tx.begin_nested():
                    single = apply_entries(tx, peer, [entry], tally, supersedes, own=own, distrusted=distrusted)
            except _CONTENT_ERRORS as error:  # this entry's content, every time: quarantine it
                digest = entry.content_hash
                unstorable.append(Refusal(digest, f"could not be stored: {type(error).__name__}", False))
                continue
            merge(report, single)
        _refuse(tx, peer, unstorable, tally, report)
        if cursor is not None:
            save_cursor(tx, peer, cursor, repaired=repaired)
    return report


# Errors an entry's content causes whenever it is applied. Anything else (a locked or
# unreachable database) rolls the whole batch back, cursor included, to be pulled again:
# quarantining on a passing fault would lose the record for good.
_CONTENT_ERRORS = (IntegrityError, DataError, OverflowError, ValueError)


def apply_entries(
    conn: Connection, peer: str, entries: list[Incoming | Refusal], tally: RefusalTally | None = None,
    supersedes: Supersedes | None = None, *, own: str = "", distrusted: frozenset[str] = frozenset(),
) -> BatchReport:
    """Apply entries inside the caller's write transaction (``apply_batch`` is the usual way in).
    ``own``: the store's agency, whose withdrawals are made by its own node, never received.
    ``distrusted``: the key ids the store distrusts, whose entries decide nothing here."""
    tally = tally or RefusalTally()
    report = BatchReport()
    refused = [e for e in entries if isinstance(e, Refusal)]
    versions = [(e, e.record) for e in entries if isinstance(e, Incoming) and e.record is not None]
    if versions:
        refused += _apply_versions(conn, peer, versions, report, tally, supersedes, own, distrusted)
    for entry in entries:
        if isinstance(entry, Incoming) and entry.withdrawal is not None:
            refusal = _apply_withdrawal(conn, peer, entry, entry.withdrawal, report, supersedes, own)
            if refusal is not None:
                refused.append(refusal)
    if distrusted and versions:
        _recover(conn, sorted({(r.ref.originator, r.ref.record_id) for _, r in versions}), distrusted)
    _refuse(conn, peer, refused, tally, report)
    return report


def merge(report: BatchReport, other: BatchReport) -> None:
    for name in ("stored", "duplicates", "resigned", "older", "equivocations", "withdrawals", "refused"):
        setattr(report, name, getattr(report, name) + getattr(other, name))
    report.events.update(other.events)


def _refuse(conn: Connection, peer: str, refusals: list[Refusal], tally: RefusalTally, report: BatchReport) -> None:
    """Aggregated events and bounded quarantine: ``exchange.store.refusals``."""
    report.events.update(record_refusals(conn, peer, refusals, tally))
    report.refused += len(refusals)


def _withdrawn_below(conn: Connection, ref: records_pb2.RecordRef) -> int:
    value = conn.execute(
        select(withdrawn.c.below_version).where(
            withdrawn.c.originator == ref.originator, withdrawn.c.record_id == ref.record_id
        )
    ).scalar_one_or_none()
    return int(value or 0)


Key = tuple[str, str]  # (originator, record_id)


@dataclass
class _Known:
    """What the store already holds for the records of one batch, read in three queries."""

    hashes: dict[tuple[str, str, int], set[bytes]]  # record versions held, by content hash
    keys: dict[tuple[str, str, int, bytes], set[str]]  # the key ids each held content is signed with
    current: dict[Key, tuple[int, int]]  # (rid, version) of the current row
    withdrawn_below: dict[Key, int]  # by withdrawals signed with a trusted key
    distrusted_current: set[Key] = field(default_factory=set)  # current rows a distrusted key signed
    withdrawn_by_distrusted: dict[Key, int] = field(default_factory=dict)  # the table's value, where higher

    @classmethod
    def load(cls, conn: Connection, keys: list[Key], distrusted: frozenset[str] = frozenset()) -> _Known:
        hashes: dict[tuple[str, str, int], set[bytes]] = {}
        signed: dict[tuple[str, str, int, bytes], set[str]] = {}
        for row in conn.execute(
            select(log.c.originator, log.c.record_id, log.c.version, log.c.content_hash, log.c.key_id).where(
                _pairs(conn, log, keys), log.c.payload_type == RECORD_TYPE
            )
        ):
            hashes.setdefault((row.originator, row.record_id, row.version), set()).add(bytes(row.content_hash))
            signed.setdefault((row.originator, row.record_id, row.version, bytes(row.content_hash)),
                              set()).add(row.key_id)
        current: dict[Key, tuple[int, int]] = {}
        distrusted_current: set[Key] = set()
        for row in conn.execute(
            select(records.c.rid, records.c.originator, records.c.record_id, records.c.version,
                   log.c.key_id).outerjoin(log, log.c.seq == records.c.seq).where(_pairs(conn, records, keys))
        ):
            current[(row.originator, row.record_id)] = (row.rid, row.version)
            if row.key_id in distrusted:
                # No bar to a lower trusted version (rule 4): ``_recover`` picks among the trusted.
                distrusted_current.add((row.originator, row.record_id))
        below = {
            (row.originator, row.record_id): row.below_version
            for row in conn.execute(
                select(withdrawn).where(_pairs(conn, withdrawn, keys))
            )
        }
        by_distrusted: dict[Key, int] = {}
        if distrusted and below:
            trusted = _trusted_withdrawals(conn, list(below), distrusted)
            for key, value in below.items():
                if trusted.get(key, value) < value:
                    by_distrusted[key] = value
                    below[key] = trusted[key]
        return cls(hashes, signed, current, below, distrusted_current, by_distrusted)


def _trusted_withdrawals(conn: Connection, keys: list[Key], distrusted: frozenset[str]) -> dict[Key, int]:
    """Per record that has withdrawals in the log: the highest version withdrawn by one signed
    with a trusted key (0: none). A record without any keeps the table's value."""
    result: dict[Key, int] = {}
    for row in conn.execute(
        select(log.c.originator, log.c.record_id, log.c.version, log.c.key_id).where(
            _pairs(conn, log, keys), log.c.payload_type == WITHDRAWAL_TYPE)
    ):
        key = (row.originator, row.record_id)
        trusted = row.version if row.key_id not in distrusted else 0
        result[key] = max(result.get(key, 0), trusted)
    return result


def _pairs(conn: Connection, table: Any, keys: list[Key]) -> ColumnElement[bool]:
    """(originator, record_id) in ``keys``, as "originator = ? AND record_id IN (...)" per
    originator: each database looks that up in the index on the pair (a row-value IN scans).

    On PostgreSQL the ids of an originator go as one array parameter (``record_id = ANY(?)``,
    an index condition still): hundreds of placeholders made SQLAlchemy and the driver render
    and convert a new statement text for every batch, a quarter of the Python of applying one.
    """
    by_originator: dict[str, list[str]] = {}
    for originator, record_id in keys:
        by_originator.setdefault(originator, []).append(record_id)
    if conn.dialect.name == "postgresql":
        return or_(*(and_(table.c.originator == o, table.c.record_id == any_(bindparam(None, ids, type_=ARRAY(Text))))
                     for o, ids in by_originator.items()))
    return or_(*(and_(table.c.originator == o, table.c.record_id.in_(ids)) for o, ids in by_originator.items()))


Version = tuple[Incoming, records_pb2.Record]  # an entry that carries a record version, and that version


def _apply_versions(
    conn: Connection, peer: str, entries: list[Version], report: BatchReport, tally: RefusalTally,
    supersedes: Supersedes | None = None, own: str = "", distrusted: frozenset[str] = frozenset(),
) -> list[Refusal]:
    """Apply record versions; returns the equivocating envelopes refused past ``max_evidence``
    for their version (``refusals.excess_evidence``)."""
    known = _Known.load(conn, sorted({(record.ref.originator, record.ref.record_id) for _, record in entries}),
                        distrusted)
    to_log: list[Version] = []
    equivocal: list[Version] = []
    excess: list[Refusal] = []
    max_evidence = tally.limits.max_equivocation_envelopes
    for entry, record in entries:
        ref, version = record.ref, record.version
        key = (ref.originator, ref.record_id)
        held = known.hashes.setdefault((ref.originator, ref.record_id, version), set())
        if version < known.withdrawn_below.get(key, 0):  # rule 1
            report.older += 1
        elif entry.content_hash in held:  # rule 2 (also within this batch)
            signed = known.keys.setdefault((*key, version, entry.content_hash), set())
            # Purged by a withdrawal a distrusted key signed (rule 1 let it through): refilled.
            refill = version < known.withdrawn_by_distrusted.get(key, 0)
            if (supersedes is not None and entry.envelope.key_id not in signed
                    and replace_envelope(conn, ref.originator, ref.record_id, version, entry.envelope,
                                         entry.content_hash, peer, supersedes, refill=refill) == "replaced"):
                report.resigned += 1
            else:
                report.duplicates += 1
            signed.add(entry.envelope.key_id)
        elif ref.originator == own:
            # Only this node writes its agency's records: a version it does not hold, served by a
            # partner, was signed by someone else holding its key. Taken, it would become the
            # record's current version here (hidden for good once the key is marked compromised,
            # the genuine one behind it) or be re-signed by `records resign` as if genuine.
            excess.append(Refusal(entry.content_hash, f"a version of {own}'s own record {clip(ref.record_id, 80)} "
                                  "that its node did not make", violation=True))
        elif held and len(held) >= max_evidence:  # rule 3, evidence enough already
            held.add(entry.content_hash)
            excess.append(excess_evidence(entry.content_hash, ref, version, max_evidence))
        else:
            if held:  # rule 3
                equivocal.append((entry, record))
            held.add(entry.content_hash)
            to_log.append((entry, record))
    if not to_log:
        return excess
    now = next_received_at(conn, now_us())  # each entry one microsecond after the one before
    # Sequence numbers are allocated here, under the write lock this transaction holds,
    # so the whole batch is one executemany (RETURNING would go row by row).
    first = next_seq(conn)
    seqs = list(range(first, first + len(to_log)))
    columns = ("seq", *LOG_COLUMNS, "mac")
    seal = integrity.of(conn)
    rows = []
    audiences: dict[frozenset[str], str] = {}  # audiences repeat: each joined once per batch
    markings: dict[int, MarkingColumns] = {}  # each version's own, for its current row below
    prepared: dict[int, RecordIndex] = {}  # each version's index terms, by seq, where computed
    for offset, (seq, (e, record)) in enumerate(zip(seqs, to_log, strict=True)):
        if e.index is not None:
            prepared[seq] = e.index
        audience = audiences.get(e.audience)
        if audience is None:
            audience = audiences[e.audience] = " ".join(sorted(e.audience))
        marking = markings[seq] = marking_columns(record.content.marking)
        row = log_row(record.ref, record.version, e.envelope, e.envelope.SerializeToString(), e.content_hash, peer,
                      now + offset, audience, marking)
        rows.append((seq, *row, log_row_mac(seal, seq, row)))  # integrity
    insert_many(conn, log, columns, rows)
    # The newest unequivocal version of each record in this batch becomes current (rule 4).
    newest: dict[Key, tuple[records_pb2.Record, int]] = {}
    equivocal_ids = {id(e) for e, _ in equivocal}
    for (entry, record), seq in zip(to_log, seqs, strict=True):
        key = (record.ref.originator, record.ref.record_id)
        if id(entry) in equivocal_ids:
            continue
        current_version = 0 if key in known.distrusted_current else known.current.get(key, (0, 0))[1]
        best = newest.get(key)
        if record.version > current_version and (best is None or record.version > best[0].version):
            newest[key] = (record, seq)
        elif record.version <= current_version:
            report.older += 1
    _write_current(conn, known, newest, markings, prepared)
    report.stored += len(newest)
    for entry, record in equivocal:
        _equivocation(conn, peer, entry, record, report, tally)
    return excess


def _recover(conn: Connection, keys: list[Key], distrusted: frozenset[str]) -> None:
    """Where the store distrusts keys: the newest version of each record signed with a trusted
    key, held and not purged, becomes current (as at its originator), and a withdrawal a
    distrusted key signed stops counting. A record whose current row is flagged equivocated,
    or whose newest trusted version has two contents, is left as it is (rule 3 said so)."""
    trusted = _trusted_withdrawals(conn, keys, distrusted)
    for row in conn.execute(select(withdrawn).where(_pairs(conn, withdrawn, keys))).all():
        key = (row.originator, row.record_id)
        if trusted.get(key, row.below_version) < row.below_version:
            where = and_(withdrawn.c.originator == key[0], withdrawn.c.record_id == key[1])
            if trusted[key]:
                conn.execute(update(withdrawn).where(where).values(below_version=trusted[key]))
            else:
                conn.execute(delete(withdrawn).where(where))
    newest: dict[Key, tuple[int, set[int]]] = {}  # version -> the seqs of its trusted entries
    for row in conn.execute(
        select(log.c.seq, log.c.originator, log.c.record_id, log.c.version, log.c.content_hash).where(
            _pairs(conn, log, keys), log.c.payload_type == RECORD_TYPE, log.c.purged.is_(False),
            log.c.key_id.not_in(distrusted))
    ):
        key = (row.originator, row.record_id)
        best = newest.get(key)
        if best is None or row.version > best[0]:
            newest[key] = (row.version, {row.seq})
        elif row.version == best[0]:
            best[1].add(row.seq)
    current = {(row.originator, row.record_id): row for row in conn.execute(
        select(records.c.rid, records.c.originator, records.c.record_id, records.c.version, records.c.seq,
               records.c.equivocated).where(_pairs(conn, records, keys)))}
    chosen: dict[Key, tuple[records_pb2.Record, int]] = {}
    for key, (_, seqs) in newest.items():
        held = current.get(key)
        if len(seqs) != 1 or (held is not None and (held.equivocated or held.seq in seqs)):
            continue
        seq = next(iter(seqs))
        envelope = conn.execute(select(log.c.envelope).where(log.c.seq == seq)).scalar_one()
        chosen[key] = (records_pb2.Record.FromString(records_pb2.Envelope.FromString(envelope).payload), seq)
    if chosen:
        known = _Known({}, {}, {key: (row.rid, row.version) for key, row in current.items()}, {})
        _write_current(conn, known, chosen, {}, {})


def _write_current(
    conn: Connection, known: _Known, newest: dict[Key, tuple[records_pb2.Record, int]],
    markings: dict[int, MarkingColumns], prepared: dict[int, RecordIndex],
) -> None:
    by_rid: dict[int, RecordIndex] = {}
    inserts = [(key, record, seq) for key, (record, seq) in newest.items() if key not in known.current]
    replaces = [(known.current[key][0], record, seq) for key, (record, seq) in newest.items() if key in known.current]
    indexed: list[tuple[int, records_pb2.Record]] = []
    if inserts:
        first = next_id(conn, records.c.rid)
        rows = []
        seal = integrity.of(conn)
        for rid, (key, record, seq) in enumerate(inserts, start=first):
            row = current_row(record, seq, markings.get(seq))
            mac = current_row_mac(seal, key[0], key[1], row)  # integrity
            rows.append((rid, key[0], key[1], *row, mac))
            indexed.append((rid, record))
            if seq in prepared:
                by_rid[rid] = prepared[seq]
        insert_many(conn, records, ("rid", "originator", "record_id", *CURRENT_COLUMNS, "mac"), rows)
    if replaces:
        conn.execute(
            update(records).where(records.c.rid == bindparam("target")),
            [{"target": rid, **sealed_values(conn, record, seq)} for rid, record, seq in replaces],
        )
        clear_index(conn, [rid for rid, _, _ in replaces])
        indexed += [(rid, record) for rid, record, _ in replaces]
        by_rid.update((rid, prepared[seq]) for rid, _, seq in replaces if seq in prepared)
    write_index(conn, indexed, by_rid)


def _equivocation(
    conn: Connection, peer: str, entry: Incoming, record: records_pb2.Record, report: BatchReport,
    tally: RefusalTally,
) -> None:
    ref, version = record.ref, record.version
    hashes = conn.execute(
        select(log.c.content_hash).where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version == version,
            log.c.payload_type == RECORD_TYPE,
        )
    ).scalars().all()
    report.equivocations += 1
    report.events["equivocation"] += 1
    record_equivocation(conn, peer, {
        "originator": ref.originator, "record_id": ref.record_id, "version": version,
        "content_hashes": sorted(bytes(h).hex() for h in hashes),
    }, entry.content_hash, tally)
    current = conn.execute(
        select(records.c.rid, records.c.version).where(
            records.c.originator == ref.originator, records.c.record_id == ref.record_id
        )
    ).first()
    if current is not None and current.version == version:
        _show_last_unequivocal(conn, current.rid, ref, version)


def _show_last_unequivocal(conn: Connection, rid: int, ref: records_pb2.RecordRef, version: int) -> None:
    """Point the record at the newest held version below ``version``, flagged."""
    earlier = conn.execute(
        select(log.c.seq, log.c.envelope).where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version < version,
            log.c.payload_type == RECORD_TYPE, log.c.purged.is_(False),
        ).order_by(log.c.version.desc()).limit(1)
    ).first()
    if earlier is not None:
        record = records_pb2.Record.FromString(records_pb2.Envelope.FromString(earlier.envelope).payload)
        conn.execute(update(records).where(records.c.rid == rid).values(**sealed_values(conn, record, earlier.seq)))
        index_record(conn, rid, record)
    conn.execute(update(records).where(records.c.rid == rid).values(equivocated=True))


def _apply_withdrawal(
    conn: Connection, peer: str, entry: Incoming, message: records_pb2.Withdrawal, report: BatchReport,
    supersedes: Supersedes | None = None, own: str = "",
) -> Refusal | None:
    ref, version = message.ref, message.version
    exists = conn.execute(
        select(log.c.seq, log.c.key_id).where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version == version,
            log.c.content_hash == entry.content_hash, log.c.payload_type == WITHDRAWAL_TYPE,
        )
    ).first()
    if exists is not None:
        # The same withdrawal signed again with a newer key replaces the one held (rule 2).
        if (supersedes is not None and exists.key_id != entry.envelope.key_id
                and replace_envelope(conn, ref.originator, ref.record_id, version, entry.envelope,
                                     entry.content_hash, peer, supersedes) == "replaced"):
            report.resigned += 1
            # Trusted again: it withdraws again what a re-signed version may have refilled
            # while it was signed only with a distrusted key.
            purge_below(conn, ref, version)
        else:
            report.duplicates += 1
        return None
    if ref.originator == own:
        # Only this node withdraws its agency's records (Retract). One served by a partner that
        # this node never made was signed by someone else holding its key: applied, it would
        # purge the record here for good, and no re-signing after the key is marked compromised
        # could bring it back.
        return Refusal(entry.content_hash, f"a withdrawal of {own}'s own record {clip(ref.record_id, 80)} that its "
                       "node did not make", violation=True)
    # Kept in the log so it is relayed to every earlier audience, whatever the caveats: the
    # audiences of the earlier versions this node held (and may have relayed) route it on.
    # A row whose seal fails is left out (and reported): an edited audience must not route the
    # withdrawal to an agency the record was never released to.
    seal = integrity.of(conn)
    earlier = conn.execute(sealed_log_rows(ref.originator, ref.record_id, RECORD_TYPE, below=version)).all()
    audience = entry.audience | {
        agency for row in earlier if seal.served_in(conn, ref.originator, ref.record_id, seal.log_row_problem(row))
        for agency in row.audience.split()
    }
    append_log(
        conn, ref, version, entry.envelope, entry.envelope.SerializeToString(), entry.content_hash, peer,
        audience,
    )
    purge_below(conn, ref, version)
    report.withdrawals += 1
    return None


def purge_below(conn: Connection, ref: records_pb2.RecordRef, version: int) -> None:
    """Purge the payloads of versions below ``version``; drop the record if nothing newer is held."""
    if version > _withdrawn_below(conn, ref):
        conn.execute(delete(withdrawn).where(
            withdrawn.c.originator == ref.originator, withdrawn.c.record_id == ref.record_id))
        conn.execute(insert(withdrawn).values(
            originator=ref.originator, record_id=ref.record_id, below_version=version))
    conn.execute(
        update(log)
        .where(
            log.c.originator == ref.originator, log.c.record_id == ref.record_id, log.c.version < version,
            log.c.payload_type == RECORD_TYPE,
        )
        .values(envelope=b"", purged=True)
    )
    current = conn.execute(
        select(records.c.rid, records.c.version).where(
            records.c.originator == ref.originator, records.c.record_id == ref.record_id
        )
    ).first()
    if current is not None and current.version < version:
        unindex_record(conn, current.rid)
        conn.execute(delete(records).where(records.c.rid == current.rid))
