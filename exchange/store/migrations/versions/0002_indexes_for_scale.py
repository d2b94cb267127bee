"""Indexes for a node that holds millions of entries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

- The text index on PostgreSQL becomes one row per record, ``record_terms(rid, terms
  text[])`` under a GIN index, instead of a (term, rid) row per term: a received batch
  of 500 records wrote some 15,000 rows, and a query for two terms joined two long
  lists. Existing terms move over. SQLite keeps its FTS5 table (``record_text``) and
  drops the unused (term, rid) table.
- ``log.received_from``: whether anything was ever received from a partner (an empty
  cursor with entries from that partner is a lost cursor, repaired by digest) was a
  scan of the whole log when the answer is no.
- ``observables.issued_at``, a copy of the record's, and ``ix_observables_newest`` on
  (type, value, issued_at, rid): a lookup of a popular value walks it newest first and
  stops when its page is full, instead of fetching and sorting every record carrying
  the value (tens of thousands at 1,000,000 records). Backfilled from ``records``.
- ``ix_log_record`` (originator, record_id, version) goes: it is a prefix of the unique
  ``uq_log_version``, which serves the same lookups, and every log insert paid for both.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_table(
            "record_terms",
            sa.Column("rid", sa.BigInteger(), nullable=False),
            sa.Column("terms", postgresql.ARRAY(sa.Text()), nullable=False),
            sa.PrimaryKeyConstraint("rid"),
        )
        op.execute(
            "INSERT INTO record_terms (rid, terms) SELECT rid, array_agg(term ORDER BY term) FROM terms GROUP BY rid"
        )
        op.create_index("ix_record_terms", "record_terms", ["terms"], postgresql_using="gin")
    op.drop_index("ix_terms_rid", table_name="terms")
    op.drop_table("terms")
    # NOT NULL needs a default to add to existing rows; the backfill replaces it at once
    # (SQLite keeps the default in its table definition, which cannot be altered in place).
    op.add_column("observables", sa.Column("issued_at", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE observables SET issued_at = (SELECT issued_at FROM records WHERE records.rid = observables.rid)")
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("observables", "issued_at", server_default=None)
    op.create_index("ix_observables_newest", "observables", ["type", "value", "issued_at", "rid"])
    op.create_index("ix_log_received_from", "log", ["received_from"])
    op.drop_index("ix_log_record", table_name="log")


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
