"""Indexes for a node that holds millions of entries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

``log.received_from``: whether anything was ever received from a partner (an empty
cursor with entries from that partner is a lost cursor, repaired by digest) was a
scan of the whole log when the answer is no.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_log_received_from", "log", ["received_from"])


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
