"""Search over the current versions: criteria, the SQL prefilter, and the plan.

Results are *candidates* newest issued first, fetched in chunks (keyset pagination)
so a caller that stops when its page is full costs little; the disclosure decision
still judges each one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, bindparam, or_, select, tuple_

from exchange.records import textindex
from exchange.records.translations import searchable_text
from exchange.store import textsearch
from exchange.store.current import StoredRecord, sealed, select_current_of
from exchange.store.schema import observables, record_countries, record_sectors, records
from exchange.store.store import Store
from exchange.v1 import records_pb2

__all__ = ["SCAN_CHUNK", "SearchFilter", "newest_first", "search", "shown_prefilter", "user_prefilter"]

SCAN_CHUNK = 200  # candidate rows fetched per round trip while filling a page


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
    # Expiry: records whose valid_until is before ``expired_before`` (microseconds; the time
    # of the search) are left out; None: expired records are included.
    expired_before: int | None = None
    min_confidence: int = 0
    # A coarse prefilter in SQL for a user of this node (rules 1 and 2: the user's agency in
    # the audience, the classification within the clearance), so a search does not walk
    # every record the user may not see; the disclosure decision still judges each row.
    audience_of: str | None = None
    classifications: tuple[str, ...] | None = None


def user_prefilter(
    audience_of: str | None, classifications: tuple[str, ...] | None
) -> list[ColumnElement[bool]]:
    """Rules 1 and 2 as a coarse SQL prefilter for a user's read (never a replacement for
    the decision): the user's agency in the audience, the classification within clearance."""
    return _user_prefilter(
        None if audience_of is None else (audience_of, f"% {audience_of} %"), classifications)


def _user_prefilter(audience: tuple[Any, Any] | None, classifications: Any) -> list[ColumnElement[bool]]:
    """``user_prefilter`` of values, or of bound parameters: ``audience`` is the agency and the
    LIKE pattern that finds it in the release list."""
    conditions: list[ColumnElement[bool]] = []
    if audience is not None:
        agency, pattern = audience
        conditions.append(or_(records.c.originator == agency, (" " + records.c.releasable_to + " ").like(pattern)))
    if classifications is not None:
        conditions.append(records.c.classification.in_(classifications))
    return conditions


def shown_prefilter(expired_before: int | None, min_confidence: int) -> list[ColumnElement[bool]]:
    """What a user asked to be shown, in SQL: not expired (a record without valid_until never
    expires), confidence at least ``min_confidence``. Not the disclosure decision: these
    only narrow a page."""
    return _shown_prefilter(expired_before, min_confidence if min_confidence > 0 else None)


def _shown_prefilter(expired_before: Any, min_confidence: Any) -> list[ColumnElement[bool]]:
    """``shown_prefilter`` of values, or of bound parameters; None leaves a condition out."""
    conditions: list[ColumnElement[bool]] = []
    if expired_before is not None:
        conditions.append(or_(records.c.valid_until.is_(None), records.c.valid_until >= expired_before))
    if min_confidence is not None:
        conditions.append(records.c.confidence >= min_confidence)
    return conditions


def search(
    store: Store, criteria: SearchFilter, *, after: tuple[int, int] | None = None, first_chunk: int = SCAN_CHUNK,
    pause: Callable[[], None] | None = None,
) -> Iterator[StoredRecord]:
    """Candidates matching ``criteria``, newest issued first, strictly after ``after``.

    ``first_chunk`` is how many rows the first round trip fetches: a caller filling a
    page of n asks for n + 1 (the SQL prefilter already leaves out most of what the
    decision would refuse), so a first page costs what it shows. ``pause`` is called
    before each further chunk (a long walk lets other searches take their turn).
    """
    shape = _Shape.of(criteria, bool(store.distrusted_keys))
    base, time_column, rid_column = _statement(shape)
    params = shape.params(criteria, store.distrusted_keys)
    keep = None
    reuse = True  # the statement is the shape's own, so the ones each chunk derives from it are kept too
    rare_text = False
    if criteria.text_terms:
        text_plan = textsearch.plan(store.engine, criteria.text_terms)
        rare_text = text_plan.few
        if text_plan.condition is not None:
            base, reuse = base.where(text_plan.condition), False
        else:
            keep = text_plan.keep
    # Walks that follow an index already in answer order (one observable's entries; records
    # by issued_at, filtered by chunk or by nothing selective); PostgreSQL is told not to
    # sort instead (see newest_first). A selective condition (countries, sectors, several
    # observables, a rare word) is left to the planner: it reads few rows, then sorts them.
    selective = bool(criteria.countries or criteria.sectors or len(criteria.observables) > 1 or rare_text)
    walk = keep is not None or len(criteria.observables) == 1 or not selective
    rows = newest_first(store, base, time_column, after, rid_column=rid_column, first_chunk=first_chunk,
                        keep=keep, walk=walk, pause=pause, params=params, reuse=reuse)
    for row in rows:
        if criteria.text and not _text_matches(criteria.text, row):
            continue  # bigrams present but not as the words asked for
        yield row


def _text_matches(text: str, row: StoredRecord) -> bool:
    """The words asked for occur in the title or summary, or in a translation of them (read
    from the signed record only when the original text does not match: translations are rare)."""
    if textindex.matches(text, row.title + "\n" + row.summary):
        return True
    record = records_pb2.Record.FromString(records_pb2.Envelope.FromString(row.envelope).payload)
    return bool(record.content.translations) and textindex.matches(text, searchable_text(record.content))


def newest_first(
    store: Store, base: Select[Any], time_column: ColumnElement[int], after: tuple[int, int] | None, *,
    rid_column: ColumnElement[int] | None = None, first_chunk: int = SCAN_CHUNK,
    keep: Callable[[Connection, Sequence[int]], set[int]] | None = None, walk: bool = False,
    pause: Callable[[], None] | None = None, params: Mapping[str, Any] | None = None, reuse: bool = False,
) -> Iterator[StoredRecord]:
    """Rows of ``base`` (a :func:`~exchange.store.current.select_current` query) by
    ``time_column`` then rid, descending, strictly after the position ``after`` = (time, rid).

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
    one HS code at 1,000,000 records, where the walk stops after a page: 2 ms); so the
    statement runs where sorting is switched off (``Store.walk``, a prepared generic plan).

    ``pause``, if given, is called before every chunk but the first, outside any transaction.

    ``params``: the values of ``base``'s named parameters, if it has any (``search`` builds it
    once per shape of criteria). The position and the kept rids go as parameters too; with
    ``reuse`` (``base`` is kept, not made for this call) the statements each chunk derives from
    it are kept as well.
    """
    order_rid: ColumnElement[int] = records.c.rid if rid_column is None else rid_column
    position = after
    chunk = SCAN_CHUNK if keep is not None else max(1, min(first_chunk, SCAN_CHUNK))
    derive = _derived if reuse else _derived.__wrapped__
    while True:
        walked, of_kept = derive(base, time_column, order_rid, position is not None, chunk, keep is not None)
        values = dict(params or {})
        if position is not None:
            values["after_time"], values["after_rid"] = position
        with store.walk(walk) as conn:
            rows = conn.execute(walked, values).all()
        shown = rows
        if keep is not None:
            with store.read() as conn:  # left to the planner: a walk's session would not sort
                kept = keep(conn, [int(r[0]) for r in rows])  # rows of (rid, time): ids_only
                shown = conn.execute(of_kept, {**values, "kept": sorted(kept)}).all() if kept else []
        yield from sealed(store, shown)  # integrity: an edited row is never served
        if len(rows) < chunk:
            return
        position = (int(getattr(rows[-1], str(time_column.name))), int(rows[-1].rid))
        if pause is not None:
            pause()
        if keep is None:
            chunk = SCAN_CHUNK
        elif len(shown) * 4 < len(rows):
            chunk = min(chunk * 2, 8 * SCAN_CHUNK)


@dataclass(frozen=True)
class _Shape:
    """Which criteria a search has (not their values): searches of one shape share one
    statement, built once, its values bound as named parameters (``params``). Building and
    keying a statement of this size costs SQLAlchemy about 0.5 ms of Python a search."""

    distrusted: bool
    audience: bool
    classifications: bool
    active_only: bool
    expired: bool
    min_confidence: bool
    kinds: bool
    originators: bool
    exclude_originators: bool
    issued_after: bool
    issued_before: bool
    countries: bool
    sectors: bool
    observables: int  # how many (one is walked in its index; several are any of them)

    @classmethod
    def of(cls, c: SearchFilter, distrusted: bool) -> _Shape:
        return cls(
            distrusted=distrusted, audience=c.audience_of is not None, classifications=c.classifications is not None,
            active_only=not c.include_retracted, expired=c.expired_before is not None,
            min_confidence=c.min_confidence > 0, kinds=bool(c.kinds), originators=bool(c.originators),
            exclude_originators=bool(c.exclude_originators), issued_after=c.issued_after is not None,
            issued_before=c.issued_before is not None, countries=bool(c.countries), sectors=bool(c.sectors),
            observables=len(c.observables),
        )

    def params(self, c: SearchFilter, distrusted: frozenset[str]) -> dict[str, Any]:
        """The values of the statement's parameters for criteria ``c`` (of this shape)."""
        values: dict[str, Any] = {
            "distrusted": sorted(distrusted), "audience": c.audience_of, "audience_like": f"% {c.audience_of} %",
            "classifications": list(c.classifications or ()), "expired_before": c.expired_before,
            "min_confidence": c.min_confidence, "kinds": list(c.kinds), "originators": list(c.originators),
            "exclude_originators": list(c.exclude_originators), "issued_after": c.issued_after,
            "issued_before": c.issued_before, "countries": list(c.countries), "sectors": list(c.sectors),
        }
        for i, (obs_type, value) in enumerate(c.observables):
            values[f"obs_type_{i}"], values[f"obs_value_{i}"] = obs_type, value
        return values


@functools.lru_cache(maxsize=256)
def _statement(shape: _Shape) -> tuple[Select[Any], ColumnElement[int], ColumnElement[int]]:
    """The statement of searches of ``shape``: (select, its time column, its rid column)."""
    base = select_current_of(shape.distrusted, bindparam("distrusted", expanding=True)).where(
        *_conditions(shape))
    if shape.observables == 1:
        # One observable (the usual lookup): walk its entries in the observables key
        # (type, value, issued_at, rid), already in answer order, and stop when the page is full; a popular value
        # (tens of thousands of records) then costs no more than a rare one.
        base = base.join(observables, observables.c.rid == records.c.rid).where(
            observables.c.type == bindparam("obs_type_0"), observables.c.value == bindparam("obs_value_0"))
        if shape.classifications:
            # The clearance prefilter on the index row's copy, so the walk skips what the user
            # may not see without looking its record up (records.classification is checked too).
            base = base.where(observables.c.classification.in_(bindparam("classifications", expanding=True)))
        return base, observables.c.issued_at, observables.c.rid
    return base, records.c.issued_at, records.c.rid


@functools.lru_cache(maxsize=1024)
def _derived(base: Select[Any], time_column: ColumnElement[int], order_rid: ColumnElement[int], positioned: bool,
             chunk: int, ids_only: bool) -> tuple[Select[Any], Select[Any]]:
    """A chunk's statements from ``base``, after (:after_time, :after_rid) if ``positioned``, newest
    first: the one walked (its first ``chunk`` rows; with ``ids_only``, their positions only), and
    the one that reads the whole rows of the rids in :kept (after an ``ids_only`` walk)."""
    query = base
    if positioned:
        # A row-value comparison, so both SQLite and PostgreSQL seek the index to it.
        query = query.where(tuple_(time_column, order_rid) < tuple_(bindparam("after_time"), bindparam("after_rid")))
    query = query.order_by(time_column.desc(), order_rid.desc())
    walked: Any = query.with_only_columns(order_rid, time_column) if ids_only else query
    return walked.limit(chunk), query.where(order_rid.in_(bindparam("kept", expanding=True)))


def _conditions(c: _Shape) -> list[ColumnElement[bool]]:
    """The conditions of a search of shape ``c``, as named parameters (``_Shape.params``)."""
    conditions = _user_prefilter(
        (bindparam("audience"), bindparam("audience_like")) if c.audience else None,
        bindparam("classifications", expanding=True) if c.classifications else None)
    if c.active_only:
        conditions.append(records.c.status == "active")
    conditions += _shown_prefilter(bindparam("expired_before") if c.expired else None,
                                   bindparam("min_confidence") if c.min_confidence else None)
    if c.kinds:
        conditions.append(records.c.kind.in_(bindparam("kinds", expanding=True)))
    if c.originators:
        conditions.append(records.c.originator.in_(bindparam("originators", expanding=True)))
    if c.exclude_originators:
        conditions.append(records.c.originator.not_in(bindparam("exclude_originators", expanding=True)))
    if c.issued_after:
        conditions.append(records.c.issued_at >= bindparam("issued_after"))
    if c.issued_before:
        conditions.append(records.c.issued_at < bindparam("issued_before"))
    if c.countries:
        countries: Any = bindparam("countries", expanding=True)
        conditions.append(records.c.rid.in_(select(record_countries.c.rid).where(
            record_countries.c.country.in_(countries))))
    if c.sectors:
        sectors: Any = bindparam("sectors", expanding=True)
        conditions.append(records.c.rid.in_(select(record_sectors.c.rid).where(record_sectors.c.sector.in_(sectors))))
    if c.observables > 1:  # one is joined by _statement instead
        pairs = [and_(observables.c.type == bindparam(f"obs_type_{i}"),
                      observables.c.value == bindparam(f"obs_value_{i}")) for i in range(c.observables)]
        conditions.append(records.c.rid.in_(select(observables.c.rid).where(or_(*pairs))))
    # Text terms: search() plans them (textsearch.plan).
    return conditions
