"""The manifests a node has trusted, every version since the first.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-04

A node starts from the newest manifest it trusts, not from whatever file is in its PKI
folder: a file older than what it adopted through sync is a rollback, and is refused.
Each document is kept as received (its signatures included) and checked again, as a
chain from the version its operator installed, every time the node starts
(exchange/node/trusted.py), so a row planted in the database is not trusted either.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manifests",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("adopted_at", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(160), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("manifests")
