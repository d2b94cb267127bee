"""Validity and confidence as search columns; the text index re-built with English stems.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

- ``records.confidence``, ``records.valid_from`` and ``records.valid_until``: copies of
  the signed content (``RecordDraft.confidence``, ``validity``), so a search or the watch
  hits leave out expired and low-confidence records in SQL, and a page costs what it
  shows. Backfilled from each current version's envelope.
- The text index: English words are now indexed by their Snowball stem
  (exchange/records/textindex.py), so every record's terms are computed again from its
  title and summary. CJK bigrams come out the same.

Neither column nor terms are sealed (exchange/store/integrity.py): they only narrow
what a user is shown, never what is disclosed, so no key is needed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from exchange.records import textindex
from exchange.store import textsearch
from exchange.store.rows import validity_columns
from exchange.v1 import records_pb2

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 1000  # records read, re-indexed and updated per round trip


def upgrade() -> None:
    op.add_column("records", sa.Column("confidence", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("records", sa.Column("valid_from", sa.BigInteger(), nullable=True))
    op.add_column("records", sa.Column("valid_until", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.alter_column("records", "confidence", server_default=None)
    after = -1
    while True:
        rows = conn.execute(sa.text(
            "SELECT records.rid, records.title, records.summary, log.envelope FROM records"
            " JOIN log ON log.seq = records.seq WHERE records.rid > :after ORDER BY records.rid LIMIT :n"
        ), {"after": after, "n": _BATCH}).all()
        if not rows:
            return
        _backfill(conn, rows)
        after = int(rows[-1].rid)


def _backfill(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> None:
    updates = []
    for row in rows:
        record = records_pb2.Record.FromString(records_pb2.Envelope.FromString(row.envelope).payload)
        confidence, valid_from, valid_until = validity_columns(record.content)
        updates.append({"r": row.rid, "c": confidence, "f": valid_from, "u": valid_until})
    conn.execute(sa.text("UPDATE records SET confidence = :c, valid_from = :f, valid_until = :u WHERE rid = :r"),
                 updates)
    rids = [int(row.rid) for row in rows]
    textsearch.remove(conn, rids)
    textsearch.add(conn, [(int(row.rid), textindex.index_terms(row.title + "\n" + row.summary)) for row in rows])


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
