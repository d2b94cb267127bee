"""The node's store: what it holds, and the indexes to find it.

Writes happen in one transaction each: a version, its log entry, its index
rows and its audit entry land together or not at all. Reads return
*candidates*; whether a caller may see one is decided by the read path through
``exchange.core.policy`` and never here.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from exchange.core.marking import Marking
from exchange.errors import Conflict
from exchange.records import textindex
from exchange.records.envelope import WITHDRAWAL_TYPE, content_hash
from exchange.store import audit as audit_log
from exchange.store import integrity, migrate, textsearch
from exchange.store.engine import WRITE, make_engine, serialise_writers
from exchange.store.rows import clear_index, current_values, log_values, next_id, next_seq, write_index
from exchange.store.schema import (
    log,
    meta,
    observables,
    peers,
    quarantine,
    record_countries,
    record_sectors,
    records,
    references,
    security_events,
)
from exchange.v1 import records_pb2

SCAN_CHUNK = 200  # candidate rows fetched per round trip while filling a page


def now_us() -> int:
    return time.time_ns() // 1000


def marking_of(marking: records_pb2.Marking) -> Marking:
    return Marking(
        classification=marking.classification,
        releasable_to=frozenset(marking.releasable_to),
        tlp=marking.tlp,
        caveats=frozenset(marking.caveats),
    )


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


@dataclass(frozen=True)
class Withdrawal:
    """A signed withdrawal to append, and the earlier audience it is routed to."""

    message: records_pb2.Withdrawal
    envelope: records_pb2.Envelope
    audience: frozenset[str]


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
class SearchFilter:
    """Search criteria; values are already validated and normalised."""

    kinds: tuple[str, ...] = ()
    originators: tuple[str, ...] = ()
    exclude_originators: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    sectors: tuple[str, ...] = ()
    observables: tuple[tuple[str, str], ...] = ()  # (type, normalised value), any matches
    text: str = ""
    text_terms: tuple[str, ...] = field(default=())
    issued_after: int | None = None  # inclusive, microseconds
    issued_before: int | None = None  # exclusive
    include_retracted: bool = False
    # A coarse prefilter in SQL for a user of this node (rules 1 and 2: the user's agency in
    # the audience, the classification within the clearance), so a search does not walk
    # every record the user may not see; the disclosure decision still judges each row.
    audience_of: str | None = None
    classifications: tuple[str, ...] | None = None


def _split(value: str) -> frozenset[str]:
    return frozenset(value.split())


def user_prefilter(audience_of: str | None, classifications: tuple[str, ...] | None) -> list[Any]:
    """Rules 1 and 2 as a coarse SQL prefilter for a user's read (never a replacement for
    the decision): the user's agency in the audience, the classification within clearance."""
    conditions: list[Any] = []
    if audience_of is not None:
        conditions.append(or_(
            records.c.originator == audience_of,
            (" " + records.c.releasable_to + " ").like(f"% {audience_of} %"),
        ))
    if classifications is not None:
        conditions.append(records.c.classification.in_(classifications))
    return conditions


@contextmanager
def _in_index_order(conn: Connection, walk: bool) -> Iterator[None]:
    """PostgreSQL, when ``walk``: plan the statements inside without a sort step, so they walk
    the index already in the order asked for (Store.newest_first says why)."""
    if not walk or conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SET LOCAL enable_sort = off")
    try:
        yield
    finally:
        conn.exec_driver_sql("SET LOCAL enable_sort = on")


def _row_to_record(row: Any) -> StoredRecord:
    return StoredRecord(
        rid=row.rid,
        originator=row.originator,
        record_id=row.record_id,
        version=row.version,
        status=row.status,
        kind=row.kind,
        marking=Marking(row.classification, _split(row.releasable_to), row.tlp, _split(row.caveats)),
        title=row.title,
        summary=row.summary,
        issued_at=row.issued_at,
        envelope=row.envelope,
        received_from=row.received_from,
        received_at=row.received_at,
        equivocated=bool(row.equivocated),
    )


class Store:
    def __init__(self, engine: Engine, *, agency: str, seal: integrity.Integrity) -> None:
        self._base_engine = engine
        # Every connection carries the node's seal (integrity.of): rows are sealed where written.
        self._engine = engine.execution_options(**{integrity.OPTION: seal})
        self._writer = self._engine.execution_options(**WRITE)
        self.seal = seal
        seal.reporter = integrity.Reporter(self.write, agency)
        # One writer at a time in this process: SQLite allows one anyway, and waiting on a
        # lock is far cheaper than its busy back-off (a sleep of up to 100 ms).
        self.write_lock = threading.RLock()
        # Signing keys the manifest marks compromised: every signature they made is void,
        # so entries signed with them are neither shown nor served (DESIGN.md "Signing").
        self.distrusted_keys: frozenset[str] = frozenset()
        self.agency = agency

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, one at a time in this process and, through the writers' lock,
        across every replica sharing the database (exchange/store/engine.py says why)."""
        with self.write_lock, self.seal.anchoring(), self._writer.begin() as conn:
            serialise_writers(conn)
            yield conn

    @contextmanager
    def audit_write(self) -> Iterator[Connection]:
        """A transaction that only appends disclosures to the audit chain (and their index).

        On PostgreSQL it takes the audit chain's lock alone (``audit.append`` does), not the
        writers' lock, nor this process's: serving a query or a pull never waits for a writer
        that is slow or idle in its transaction. On SQLite, one write lock serves all."""
        if self._engine.dialect.name == "sqlite":
            with self.write() as conn:
                yield conn
            return
        with self.seal.anchoring(), self._writer.begin() as conn:
            yield conn

    @classmethod
    def open(cls, url: str, *, agency: str, seal: integrity.Integrity) -> Store:
        """Open a database whose schema is at this software's head revision (else ConfigError)."""
        migrate.refuse_missing_sqlite(url)  # connecting would create an empty file
        with migrate.database_errors(url):
            engine = make_engine(url)
            try:
                migrate.check(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine, agency=agency, seal=seal)

    def close(self) -> None:
        self._base_engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    def token_key(self) -> bytes:
        with self._engine.connect() as conn:
            value: bytes = conn.execute(select(meta.c.value).where(meta.c.key == "token_key")).scalar_one()
        return value

    def log_epoch(self) -> bytes:
        with self._engine.connect() as conn:
            value: bytes = conn.execute(select(meta.c.value).where(meta.c.key == "log_epoch")).scalar_one()
        return value

    def log_fingerprint(self, seq: int) -> bytes | None:
        """The first 8 bytes of the content hash at ``seq`` (None if there is no such entry)."""
        with self._engine.connect() as conn:
            value = conn.execute(select(log.c.content_hash).where(log.c.seq == seq)).scalar_one_or_none()
        return None if value is None else bytes(value[:8])

    def log_after(
        self, after: int, *, upto: int | None = None, originator: str | None = None, id_prefix: str = "",
        chunk: int = 1000, include_purged: bool = False, audience_of: str | None = None,
    ) -> Iterator[LogEntry]:
        """Unpurged log entries with ``after`` < seq (<= ``upto``) in order, with their record's
        current marking.

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
                log.c.key_id, log.c.purged, log.c.mac, records.c.version.label("r_version"),
                records.c.seq.label("r_seq"), records.c.status.label("r_status"), records.c.kind.label("r_kind"),
                records.c.mac.label("r_mac"),
            )
            .outerjoin(
                records, and_(records.c.originator == log.c.originator, records.c.record_id == log.c.record_id)
            )
        )
        if not include_purged:
            query = query.where(log.c.purged.is_(False))
        if self.distrusted_keys:
            query = query.where(log.c.key_id.not_in(self.distrusted_keys))
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
            with self._engine.connect() as conn, _in_index_order(conn, walk=True):
                rows = conn.execute(page).all()
            for row in rows:
                (seq, originator, record_id, version, digest, envelope, payload_type, audience, classification,
                 releasable_to, tlp, caveats, v_classification, v_releasable_to, v_tlp, v_caveats) = row[:16]
                if not self.seal.served(originator, record_id, self.seal.entry_problem(row)):
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

    def log_end(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(log.c.seq), 0))).scalar_one())

    def earlier_audience(self, originator: str, record_id: str) -> frozenset[str]:
        """Every agency any held version of a record was released to."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(log.c.audience).where(
                    log.c.originator == originator, log.c.record_id == record_id,
                    log.c.payload_type != WITHDRAWAL_TYPE,
                )
            ).scalars()
            return frozenset(agency for row in rows for agency in row.split())

    def ping(self) -> None:
        """Raise unless the store's tables can be read (not just the server answer)."""
        with self._engine.connect() as conn:
            conn.execute(select(meta.c.key).limit(1)).all()

    # --- writes of the node's own records ------------------------------------------------

    def find_reference(self, submitter: str, reference: str) -> str | None:
        with self._engine.connect() as conn:
            return self._reference(conn, submitter, reference)

    def _reference(self, conn: Connection, submitter: str, reference: str) -> str | None:
        found: str | None = conn.execute(
            select(references.c.record_id).where(
                references.c.originator == self.agency,
                references.c.submitter == submitter,
                references.c.reference == reference,
            )
        ).scalar_one_or_none()
        return found

    def put_local(
        self,
        record: records_pb2.Record,
        envelope: records_pb2.Envelope,
        *,
        actor: str,
        action: str,
        audience: frozenset[str],
        submitter: str = "",
        reference: str = "",
        base_version: int | None = None,
        withdrawal: Withdrawal | None = None,
    ) -> str | None:
        """Store a version this node just signed, with its audit entry, atomically.

        A new record (``base_version`` None) whose reference is already known
        is not stored: the existing record id is returned instead. A revision
        whose ``base_version`` is no longer current raises Conflict. A
        withdrawal of the earlier versions, when the version narrows its
        audience, is appended in the same transaction.
        """
        envelope_bytes = envelope.SerializeToString()
        digest = content_hash(envelope.payload)
        try:
            with self.write() as conn:
                if base_version is None and reference:
                    existing = self._reference(conn, submitter, reference)
                    if existing is not None:
                        return existing
                seq = self._append_log(
                    conn, record.ref, record.version, envelope, envelope_bytes, digest, self.agency, audience,
                    record.content.marking,
                )
                if withdrawal is not None:
                    self._append_log(
                        conn, withdrawal.message.ref, withdrawal.message.version, withdrawal.envelope,
                        withdrawal.envelope.SerializeToString(), content_hash(withdrawal.envelope.payload),
                        self.agency, withdrawal.audience,
                    )
                if base_version is None:
                    rid = self._insert_current(conn, record, seq)
                    if reference:
                        conn.execute(
                            insert(references).values(
                                originator=self.agency,
                                submitter=submitter,
                                reference=reference,
                                record_id=record.ref.record_id,
                            )
                        )
                else:
                    rid = self._replace_current(conn, record, seq, base_version)
                self._index(conn, rid, record)
                audit_log.append(
                    conn,
                    at=now_us(),
                    actor=actor,
                    action=action,
                    detail={
                        "originator": record.ref.originator,
                        "record_id": record.ref.record_id,
                        "version": record.version,
                        "content_hash": digest.hex(),
                    },
                )
        except IntegrityError:
            # Lost a race: the same reference or version was written concurrently.
            if base_version is None and reference:
                existing = self.find_reference(submitter, reference)
                if existing is not None:
                    return existing
            raise Conflict(f"version {record.version} of the record already exists") from None
        return None

    @staticmethod
    def _append_log(
        conn: Connection,
        ref: records_pb2.RecordRef,
        version: int,
        envelope: records_pb2.Envelope,
        envelope_bytes: bytes,
        digest: bytes,
        received_from: str,
        audience: frozenset[str],
        marking: records_pb2.Marking | None = None,
    ) -> int:
        seq = next_seq(conn)
        values = log_values(ref, version, envelope, envelope_bytes, digest, received_from, now_us(), audience, marking)
        values["mac"] = integrity.of(conn).log_mac_of(seq, values)  # integrity: sealed where written
        conn.execute(insert(log).values(seq=seq, **values))
        return seq

    @staticmethod
    def _insert_current(conn: Connection, record: records_pb2.Record, seq: int) -> int:
        rid = next_id(conn, records.c.rid)
        values = current_values(record, seq)
        values["mac"] = integrity.of(conn).records_mac_of(record.ref.originator, record.ref.record_id, values)
        conn.execute(
            insert(records).values(
                rid=rid,
                originator=record.ref.originator,
                record_id=record.ref.record_id,
                **values,
            )
        )
        return rid

    def _replace_current(self, conn: Connection, record: records_pb2.Record, seq: int, base: int) -> int:
        # Compare-and-set on the version: of two revisions of the same base, only
        # one can match; the other finds zero rows and loses (ABORTED).
        values = current_values(record, seq)
        values["mac"] = integrity.of(conn).records_mac_of(record.ref.originator, record.ref.record_id, values)
        result = conn.execute(
            update(records)
            .where(
                records.c.originator == record.ref.originator,
                records.c.record_id == record.ref.record_id,
                records.c.version == base,
            )
            .values(**values)
            .returning(records.c.rid)
        )
        rid = result.scalar_one_or_none()
        if rid is None:
            raise Conflict(f"version {base} is no longer the current version")
        return int(rid)

    @staticmethod
    def _index(conn: Connection, rid: int, record: records_pb2.Record) -> None:
        clear_index(conn, [rid])
        write_index(conn, [(rid, record)])

    @staticmethod
    def _unindex(conn: Connection, rid: int) -> None:
        clear_index(conn, [rid])

    # --- reads ---------------------------------------------------------------------------

    def select_current(self) -> Any:
        """Current versions with their envelopes; entries signed with a distrusted key left out."""
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
        if self.distrusted_keys:
            query = query.where(log.c.key_id.not_in(self.distrusted_keys))
        return query

    def current(self, originator: str, record_id: str) -> StoredRecord | None:
        query = self.select_current().where(
            records.c.originator == originator, records.c.record_id == record_id
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not self.seal.served(originator, record_id, self.seal.current_problem(row)):
            return None  # integrity: an edited row is never served
        return _row_to_record(row)

    def search(
        self, criteria: SearchFilter, *, after: tuple[int, int] | None = None, first_chunk: int = SCAN_CHUNK
    ) -> Iterator[StoredRecord]:
        """Candidates matching ``criteria``, newest issued first, strictly after ``after``.

        ``first_chunk`` is how many rows the first round trip fetches: a caller filling a
        page of n asks for n + 1 (the SQL prefilter already leaves out most of what the
        decision would refuse), so a first page costs what it shows.
        """
        base = self.select_current().where(*self._conditions(criteria))
        keep = None
        if criteria.text_terms:
            text_plan = textsearch.plan(self._engine, criteria.text_terms)
            if text_plan.condition is not None:
                base = base.where(text_plan.condition)
            else:
                keep = text_plan.keep
        time_column, rid_column = records.c.issued_at, records.c.rid
        if len(criteria.observables) == 1:
            # One observable (the usual lookup): walk its entries in ix_observables_newest,
            # already in answer order, and stop when the page is full; a popular value
            # (tens of thousands of records) then costs no more than a rare one.
            obs_type, value = criteria.observables[0]
            base = base.join(observables, observables.c.rid == records.c.rid).where(
                observables.c.type == obs_type, observables.c.value == value
            )
            time_column, rid_column = observables.c.issued_at, observables.c.rid
        # Walks that follow an index already in answer order (one observable's entries; records
        # by issued_at, filtered by chunk or by nothing selective); PostgreSQL is told not to
        # sort instead (see newest_first). A selective condition (countries, sectors, several
        # observables, a rare word) is left to the planner: it reads few rows, then sorts them.
        selective = bool(criteria.countries or criteria.sectors or len(criteria.observables) > 1
                         or (criteria.text_terms and keep is None))
        walk = keep is not None or len(criteria.observables) == 1 or not selective
        rows = self.newest_first(base, time_column, after, rid_column=rid_column, first_chunk=first_chunk, keep=keep,
                                 walk=walk)
        for row in rows:
            if criteria.text and not textindex.matches(criteria.text, row.title + "\n" + row.summary):
                continue  # bigrams present but not as the words asked for
            yield row

    def newest_first(
        self, base: Any, time_column: Any, after: tuple[int, int] | None, *, rid_column: Any = None,
        first_chunk: int = SCAN_CHUNK, keep: Callable[[Connection, Sequence[int]], set[int]] | None = None,
        walk: bool = False,
    ) -> Iterator[StoredRecord]:
        """Rows of ``base`` (a :meth:`select_current` query) by ``time_column`` then rid,
        descending, strictly after the position ``after`` = (time, rid).

        Fetched in chunks (keyset pagination), so a caller that stops when its page
        is full costs little; the caller's page token holds the last position shown.
        ``rid_column`` is the rid the order uses (``records.rid`` unless ``base`` joins
        an index table whose order it follows); the row's own time column of that name
        and its rid give the position. ``keep``, when given, says which rids of each
        chunk to yield (a condition checked outside SQL): each chunk is then walked for
        its positions only, and the whole rows (envelopes) are read for the kept rids
        alone; chunks start at SCAN_CHUNK and grow while few rows pass.

        ``walk``: an index in exactly this order exists and is the plan to use. PostgreSQL's
        planner, misled by estimates of the user prefilter (a LIKE over the release list),
        would otherwise fetch every candidate and sort them (60 ms for the 10,000 records of
        one HS code at 1,000,000 records, where the walk stops after a page: 2 ms); so sorting
        is switched off for the statement (SET LOCAL, this transaction only).
        """
        rid_column = records.c.rid if rid_column is None else rid_column
        position = after
        chunk = SCAN_CHUNK if keep is not None else max(1, min(first_chunk, SCAN_CHUNK))
        while True:
            query = base
            if position is not None:
                # A row-value comparison, so both SQLite and PostgreSQL seek the index to it.
                query = query.where(tuple_(time_column, rid_column) < tuple_(*position))
            query = query.order_by(time_column.desc(), rid_column.desc())
            with self._engine.connect() as conn:
                if keep is None:
                    with _in_index_order(conn, walk):
                        rows = conn.execute(query.limit(chunk)).all()
                    shown = rows
                else:
                    with _in_index_order(conn, walk):
                        rows = conn.execute(query.with_only_columns(rid_column, time_column).limit(chunk)).all()
                    kept = keep(conn, [int(r.rid) for r in rows])
                    shown = conn.execute(query.where(rid_column.in_(kept))).all() if kept else []
            # integrity: an edited row is never served
            yield from (_row_to_record(r) for r in shown
                        if self.seal.served(r.originator, r.record_id, self.seal.current_problem(r)))
            if len(rows) < chunk:
                return
            position = (int(getattr(rows[-1], time_column.name)), int(rows[-1].rid))
            if keep is None:
                chunk = SCAN_CHUNK
            elif len(shown) * 4 < len(rows):
                chunk = min(chunk * 2, 8 * SCAN_CHUNK)

    def _conditions(self, c: SearchFilter) -> list[Any]:
        conditions = user_prefilter(c.audience_of, c.classifications)
        if not c.include_retracted:
            conditions.append(records.c.status == "active")
        if c.kinds:
            conditions.append(records.c.kind.in_(c.kinds))
        if c.originators:
            conditions.append(records.c.originator.in_(c.originators))
        if c.exclude_originators:
            conditions.append(records.c.originator.not_in(c.exclude_originators))
        if c.issued_after is not None:
            conditions.append(records.c.issued_at >= c.issued_after)
        if c.issued_before is not None:
            conditions.append(records.c.issued_at < c.issued_before)
        if c.countries:
            conditions.append(
                records.c.rid.in_(select(record_countries.c.rid).where(record_countries.c.country.in_(c.countries)))
            )
        if c.sectors:
            conditions.append(
                records.c.rid.in_(select(record_sectors.c.rid).where(record_sectors.c.sector.in_(c.sectors)))
            )
        if len(c.observables) > 1:  # one is joined by search() instead
            pairs = [and_(observables.c.type == t, observables.c.value == v) for t, v in c.observables]
            conditions.append(records.c.rid.in_(select(observables.c.rid).where(or_(*pairs))))
        # c.text_terms: search() plans them (textsearch.plan).
        return conditions

    def log_entries(self, originator: str, record_id: str) -> Sequence[Any]:
        """Every log entry held for a record, oldest first (for operators and tests)."""
        with self._engine.connect() as conn:
            return conn.execute(
                select(log)
                .where(log.c.originator == originator, log.c.record_id == record_id)
                .order_by(log.c.seq)
            ).all()

    # --- sync state ------------------------------------------------------------------------

    def peer_cursor(self, peer: str) -> bytes:
        with self._engine.connect() as conn:
            value = conn.execute(select(peers.c.cursor).where(peers.c.agency == peer)).scalar_one_or_none()
        return b"" if value is None else bytes(value)

    def received_from(self, peer: str) -> bool:
        """Whether any entry held came from ``peer`` (so an empty cursor means a lost one)."""
        with self._engine.connect() as conn:
            return conn.execute(select(log.c.seq).where(log.c.received_from == peer).limit(1)).first() is not None

    def peer_needs_repair(self, peer: str) -> bool:
        with self._engine.connect() as conn:
            value = conn.execute(select(peers.c.needs_repair).where(peers.c.agency == peer)).scalar_one_or_none()
        return bool(value)

    def manifest_changed(self, version: int, partners: Iterable[str]) -> bool:
        """Record the manifest version in use; if it changed, flag every peer for repair."""
        with self.write() as conn:
            stored = conn.execute(select(meta.c.value).where(meta.c.key == "manifest_version")).scalar_one_or_none()
            if stored is not None and int(stored) == version:
                return False
            conn.execute(delete(meta).where(meta.c.key == "manifest_version"))
            conn.execute(insert(meta).values(key="manifest_version", value=str(version).encode()))
            if stored is None:
                return False  # first start: nothing held yet under another manifest
            for agency in partners:
                if conn.execute(update(peers).where(peers.c.agency == agency).values(needs_repair=True)).rowcount == 0:
                    conn.execute(insert(peers).values(agency=agency, cursor=b"", needs_repair=True))
            return True

    def note_pull(self, peer: str, error: str | None) -> None:
        """Record the outcome of a pull attempt (the cursor itself moves with each batch)."""
        with self.write() as conn:
            values = {"last_attempt": now_us(), "last_error": error}
            if conn.execute(update(peers).where(peers.c.agency == peer).values(**values)).rowcount == 0:
                conn.execute(insert(peers).values(agency=peer, cursor=b"", **values))

    def peer_states(self) -> list[Any]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(peers).order_by(peers.c.agency)).all())

    def security_events(self) -> list[Any]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(security_events).order_by(security_events.c.id)).all())

    def quarantined(self) -> list[Any]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(quarantine).order_by(quarantine.c.id)).all())

    # --- audit -----------------------------------------------------------------------------

    def audit(self, *, actor: str, action: str, detail: dict[str, Any]) -> None:
        with self.audit_write() as conn:
            audit_log.append(conn, at=now_us(), actor=actor, action=action, detail=detail)

    def audit_verify(self) -> list[str]:
        with self._engine.connect() as conn:
            return audit_log.verify(conn)

    def integrity_problems(self) -> list[str]:
        """Every row whose seal does not match, naming its record (exchange/store/sealcheck.py)."""
        from exchange.store import sealcheck

        with self._engine.connect() as conn:
            return sealcheck.problems(conn, self.select_current(), self.seal)

    def audit_entries(self, action: str | None = None) -> list[audit_log.AuditEntry]:
        with self._engine.connect() as conn:
            return list(audit_log.entries(conn, action=action))
