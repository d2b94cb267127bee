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

from collections.abc import Sequence

from sqlalchemy import BigInteger, Column, Connection, Engine, Integer, MetaData, Table, Text, column, delete, text
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


def add(conn: Connection, rows: Sequence[tuple[int, set[str]]]) -> None:
    """Index the terms of each (rid, terms)."""
    from exchange.store.rows import insert_many  # rows imports this module

    if is_sqlite(conn):
        values = [(rid, " ".join(sorted(words))) for rid, words in rows if words]
        if values:
            conn.exec_driver_sql("INSERT INTO record_text (rowid, terms) VALUES (?, ?)", values)
        return
    insert_many(conn, record_terms, ("rid", "terms"), [(rid, sorted(words)) for rid, words in rows if words])


def remove(conn: Connection, rids: Sequence[int]) -> None:
    if not rids:
        return
    if is_sqlite(conn):
        conn.exec_driver_sql(
            f"DELETE FROM record_text WHERE rowid IN ({', '.join('?' * len(rids))})", tuple(rids)
        )
        return
    conn.execute(delete(record_terms).where(record_terms.c.rid.in_(rids)))


def condition(bind: Engine | Connection, words: Sequence[str]) -> ColumnElement[bool]:
    """Records whose index holds every one of ``words``."""
    if is_sqlite(bind):
        # Each term is quoted: a bare term could read as an FTS5 operator (AND, NEAR...).
        expression = " ".join(f'"{w}"' for w in words)
        matching = text("SELECT rowid FROM record_text WHERE record_text MATCH :expression").bindparams(
            expression=expression
        )
        return records.c.rid.in_(matching.columns(column("rowid", Integer)))
    wanted = sorted(set(words))
    return records.c.rid.in_(
        text("SELECT rid FROM record_terms WHERE terms @> CAST(:wanted AS text[])")
        .bindparams(wanted=wanted).columns(column("rid", BigInteger))
    )
