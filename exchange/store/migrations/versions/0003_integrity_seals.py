"""Seals under the node's integrity key (exchange/store/integrity.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

- ``log.mac``, ``records.mac`` and ``disclosure_index.mac``: an HMAC-SHA256 under a
  key kept outside the database over every column the disclosure decision (or its SQL
  prefilters) reads, so an edit of those columns is never served. NULL is an unsealed
  row, and an unsealed row is never served either.
- The audit chain's hashes become keyed (HMAC instead of SHA-256).

Rows that exist when this revision is applied are sealed, and the audit chain re-keyed,
by ``exchange db upgrade --config``, which reads the key (a migration alone cannot: the
key is not in the database); it refuses to do so over an audit chain that does not verify.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("log", "records", "disclosure_index"):
        op.add_column(table, sa.Column("mac", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
