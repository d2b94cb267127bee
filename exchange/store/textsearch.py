"""The text index, per database: our own terms, the database's inverted index.

Terms come from ``exchange.records.textindex`` (character bigrams for Japanese,
Chinese and Korean, words otherwise); the substring post-filter in the store
confirms matches. Each database keeps one row per record and does the inverted
index in C:

- SQLite: the FTS5 table ``record_text`` over the terms joined by spaces; its
  ``unicode61`` tokenizer splits exactly at those spaces (a term never contains a
  separator).
- PostgreSQL: ``record_terms``, the terms as a ``text[]`` under a GIN index, queried
  by containment (``terms @> ARRAY[...]``).

Both tables are made by the migrations and are not in ``schema.metadata``: each
exists on one dialect only.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    column,
    delete,
    exists,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from exchange.store.schema import records

record_terms = Table(
    "record_terms",
    MetaData(),
    Column("rid", BigInteger, primary_key=True),
    Column("terms", ARRAY(Text), nullable=False),
)


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def add(conn: Connection, rows: Sequence[tuple[int, AbstractSet[str] | str]]) -> None:
    """Index the terms of each (rid, terms): a set, or sorted and space-joined already
    (``rows.index_of``; a term never holds a space)."""
    joined = [(rid, words if isinstance(words, str) else " ".join(sorted(words))) for rid, words in rows]
    if is_sqlite(conn):
        values = [(rid, words) for rid, words in joined if words]
        if values:
            conn.exec_driver_sql("INSERT INTO record_text (rowid, terms) VALUES (?, ?)", values)
        return
    values = [(rid, words) for rid, words in joined if words]
    if values:
        # The joined terms go over as text and PostgreSQL splits them: COPY of a text[] per row
        # made the driver quote and escape every term in Python (about 30 us per record,
        # on the writing thread of a pull), and an array of strings is sent as it is.
        conn.execute(
            text("INSERT INTO record_terms (rid, terms) SELECT rid, string_to_array(words, ' ') "
                 "FROM unnest(CAST(:rids AS bigint[]), CAST(:words AS text[])) AS batch(rid, words)"),
            {"rids": [rid for rid, _ in values], "words": [words for _, words in values]},
        )


def remove(conn: Connection, rids: Sequence[int]) -> None:
    if not rids:
        return
    if is_sqlite(conn):
        conn.exec_driver_sql(
            f"DELETE FROM record_text WHERE rowid IN ({', '.join('?' * len(rids))})", tuple(rids)
        )
        return
    conn.execute(delete(record_terms).where(record_terms.c.rid.in_(rids)))


# How many matching records the text index may name before a search stops collecting
# them all and filters the records it walks newest first instead (see ``plan``).
# Measured at 1,000,000 records, a user who may see 10% of them, first page of 50
# (bench/query_bench.py store): collecting costs about 2 us per match (14,000: 29 ms;
# 29,000: 56 ms; 380,000: 330 ms), walking about 1/share of matches (14,000: 63 ms;
# 29,000: 35 ms; 57,000: 18 ms; 380,000: 3.5 ms); they cross near 20,000.
COLLECT_LIMIT = 20_000

# The FTS5 table as SQLAlchemy sees it.
_record_text = table("record_text", column("rowid", Integer))


@dataclass(frozen=True)
class TextPlan:
    """How a search applies its text condition: in SQL, or to each chunk of rows it walks."""

    condition: ColumnElement[bool] | None  # a WHERE condition, or None: use ``keep`` (SQLite)
    words: tuple[str, ...] = ()
    # Whether few records match: the condition then names them, and the search reads those
    # and sorts them. Otherwise the search walks records newest first, and the condition
    # (PostgreSQL) or ``keep`` (SQLite) judges each row walked.
    few: bool = True

    def keep(self, conn: Connection, rids: Sequence[int]) -> set[int]:
        """Which of ``rids`` the index holds every word for, in one query (SQLite).

        Each row's terms, read by rowid from the FTS5 table's content (its documented shadow
        table ``record_text_content``: a plain rowid B-tree), and the words looked for here: a
        term is a whole space-separated token, and index and query make their terms alike
        (exchange.records.textindex). A MATCH over the chunk's range of rowids read every match
        in that range instead (for a common word, thousands per chunk: 2.3 ms of a 4 ms search
        at 1,000,000 records, this 0.6); a probe of FTS5 per rid would seek every segment of
        its index once per record.
        """
        if not rids:
            return set()
        marks = [f" {word} " for word in self.words]
        found = conn.exec_driver_sql(
            f"SELECT id, c0 FROM record_text_content WHERE id IN ({', '.join('?' * len(rids))})", tuple(rids))
        return {int(rid) for rid, terms in found if all(mark in f" {terms} " for mark in marks)}


def _expression(words: Sequence[str]) -> str:
    # Each term is quoted: a bare term could read as an FTS5 operator (AND, NEAR...).
    return " ".join(f'"{w}"' for w in words)


def _match(expression: str) -> ColumnElement[bool]:
    return literal_column("record_text").op("MATCH")(bindparam("fts_expression", expression))


def _all_words(words: Sequence[str]) -> Any:
    """rids whose ``record_terms`` row holds every one of ``words`` (PostgreSQL, GIN)."""
    return select(record_terms.c.rid).where(record_terms.c.terms.contains(sorted(set(words))))


# How long a plan's count of matches is reused for the same words (see ``plan``), and for
# how many word sets at most per database.
PLAN_SECONDS = 60.0
PLAN_ENTRIES = 1024
_counted: weakref.WeakKeyDictionary[Engine, dict[tuple[tuple[str, ...], int], tuple[float, bool]]] = (
    weakref.WeakKeyDictionary())
_counted_lock = threading.Lock()


def plan(bind: Engine | Connection, words: Sequence[str]) -> TextPlan:
    """The plan for records whose index holds every one of ``words``.

    It depends on how many records match. SQLite: FTS5 counts them cheaply from its
    doclists, stopping at ``COLLECT_LIMIT``. PostgreSQL: counting would read up to that
    many rows (45 ms for a common word at 1,000,000 records), so the planner's estimate
    is asked instead (its statistics keep the frequency of every common array element;
    a rare word's estimate is small, as it should be):

    * few (a rare word): the rids come from the index in SQL (``rid IN (...)``), so the
      search reads only those records and sorts them;
    * many (a common word such as 技術, in a third of the records): reading and sorting
      them all would cost far more than a page is worth, so the search walks records
      newest first (ix_records_issued, the cheap conditions in SQL) and stops when its page
      is full. PostgreSQL judges each row walked in the same statement: does its
      ``record_terms`` row (a primary key lookup) hold every word (``EXISTS``)? SQLite asks,
      once per chunk of rows, which of them match (``TextPlan.keep``): a correlated FTS5
      probe per row would cost one FTS5 query per record, each seeking every segment of
      the index.

    The answer to "few or many" is kept for ``PLAN_SECONDS`` per set of words: counting
    a common word's first 20,000 matches was an eighth of its search (about 1 ms at
    1,000,000 records), and the count moves slowly. Either plan gives the same records;
    a stale answer can only make one search slower.
    """
    words = tuple(dict.fromkeys(words))
    few = _few(bind, words)
    if few:
        if is_sqlite(bind):
            return TextPlan(records.c.rid.in_(select(_record_text.c.rowid).where(_match(_expression(words)))))
        return TextPlan(records.c.rid.in_(_all_words(words)))
    if is_sqlite(bind):
        return TextPlan(None, words, few=False)
    return TextPlan(exists().where(record_terms.c.rid == records.c.rid,
                                   record_terms.c.terms.contains(sorted(set(words)))), words, few=False)


def _few(bind: Engine | Connection, words: tuple[str, ...]) -> bool:
    """Do fewer than ``COLLECT_LIMIT`` records hold every one of ``words``? (Counted, or
    reused from a count less than ``PLAN_SECONDS`` old.)"""
    engine = bind if isinstance(bind, Engine) else bind.engine
    key = (words, COLLECT_LIMIT)
    now = time.monotonic()
    with _counted_lock:
        counted = _counted.setdefault(engine, {})
        found = counted.get(key)
    if found is not None and now - found[0] < PLAN_SECONDS:
        return found[1]
    with _connection(bind) as conn:
        if is_sqlite(conn):
            probe = select(_record_text.c.rowid).where(_match(_expression(words))).limit(COLLECT_LIMIT).subquery()
            few = conn.execute(select(func.count()).select_from(probe)).scalar_one() < COLLECT_LIMIT
        else:
            few = _estimated_rows(conn, sorted(set(words))) < COLLECT_LIMIT
    with _counted_lock:
        counted.pop(key, None)
        if len(counted) >= PLAN_ENTRIES:
            del counted[next(iter(counted))]  # the oldest count goes first
        counted[key] = (now, few)
    return few


def _estimated_rows(conn: Connection, words: list[str]) -> float:
    """PostgreSQL's estimate of the records holding every one of ``words`` (planning only)."""
    plan = conn.execute(
        text("EXPLAIN (FORMAT JSON) SELECT rid FROM record_terms WHERE terms @> CAST(:words AS text[])"),
        {"words": words},
    ).scalar_one()
    return float(plan[0]["Plan"]["Plan Rows"])


def condition(bind: Engine | Connection, words: Sequence[str]) -> ColumnElement[bool]:
    """Records whose index holds every one of ``words``, as one SQL condition (bench/query_bench.py
    counts matches with it; a search plans its text through :func:`plan` instead)."""
    if is_sqlite(bind):
        return records.c.rid.in_(select(_record_text.c.rowid).where(_match(_expression(words))))
    return records.c.rid.in_(_all_words(words))


@contextmanager
def _connection(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn
