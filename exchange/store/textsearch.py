"""The text index, per database: our own terms, the database's inverted index.

Terms come from ``exchange.records.textindex`` (character bigrams for Japanese,
Chinese and Korean, words otherwise), joined by spaces into one string per
record. SQLite keeps them in an FTS5 table whose ``unicode61`` tokenizer splits
exactly at those spaces (the table ``record_text`` is made by the
first migration) (a term never contains a separator), so FTS5 does the
inverted index in C; the substring post-filter in the store confirms matches.
Other databases keep them in a plain table of (term, rid) rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Integer, column, delete, func, insert, select, text
from sqlalchemy.sql.elements import ColumnElement

from exchange.store.schema import records, terms


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def add(conn: Connection, rows: Sequence[tuple[int, set[str]]]) -> None:
    """Index the terms of each (rid, terms)."""
    if is_sqlite(conn):
        values = [(rid, " ".join(sorted(words))) for rid, words in rows if words]
        if values:
            conn.exec_driver_sql("INSERT INTO record_text (rowid, terms) VALUES (?, ?)", values)
        return
    flat: list[dict[str, Any]] = [{"rid": rid, "term": t} for rid, words in rows for t in words]
    if flat:
        conn.execute(insert(terms), flat)


def remove(conn: Connection, rids: Sequence[int]) -> None:
    if not rids:
        return
    if is_sqlite(conn):
        conn.exec_driver_sql(
            f"DELETE FROM record_text WHERE rowid IN ({', '.join('?' * len(rids))})", tuple(rids)
        )
        return
    conn.execute(delete(terms).where(terms.c.rid.in_(rids)))


def condition(bind: Engine | Connection, words: Sequence[str]) -> ColumnElement[bool]:
    """Records whose index holds every one of ``words``."""
    if is_sqlite(bind):
        # Each term is quoted: a bare term could read as an FTS5 operator (AND, NEAR...).
        expression = " ".join(f'"{w}"' for w in words)
        matching = text("SELECT rowid FROM record_text WHERE record_text MATCH :expression").bindparams(
            expression=expression
        )
        return records.c.rid.in_(matching.columns(column("rowid", Integer)))
    distinct = set(words)
    subquery = (
        select(terms.c.rid).where(terms.c.term.in_(distinct)).group_by(terms.c.rid)
        .having(func.count() == len(distinct))
    )
    return records.c.rid.in_(subquery)
