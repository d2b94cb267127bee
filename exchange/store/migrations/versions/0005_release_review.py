"""Release review: drafts held until disclosure officers approve them, and their approvals.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

- ``review_drafts``: an analyst's submission or revision held for review (the draft as
  submitted, how many approvals it needs and why, its state). Apart from ``log`` and
  ``records``, which every serving path reads, so a held draft is served by none.
- ``review_approvals``: one row per officer's approval of a draft.

Both carry an HMAC under the node's integrity key (exchange/store/integrity.py). A new
table starts empty, so nothing needs sealing here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_drafts",
        sa.Column("draft_id", sa.String(36), primary_key=True),
        sa.Column("originator", sa.String(32), nullable=False),
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("base_version", sa.Integer, nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(256), nullable=False),
        sa.Column("draft", sa.LargeBinary, nullable=False),
        sa.Column("approvals_needed", sa.Integer, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("submitted_at", sa.BigInteger, nullable=False),
        sa.Column("decided_at", sa.BigInteger, nullable=True),
        sa.Column("released_version", sa.Integer, nullable=True),
        sa.Column("mac", sa.LargeBinary(32), nullable=False),
    )
    op.create_index("review_drafts_state", "review_drafts", ["state", "submitted_at"])
    op.create_index("review_drafts_author", "review_drafts", ["author", "reference"])
    op.create_table(
        "review_approvals",
        sa.Column("draft_id", sa.String(36), sa.ForeignKey("review_drafts.draft_id"), primary_key=True),
        sa.Column("officer", sa.String(64), primary_key=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("mac", sa.LargeBinary(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("review_approvals")
    op.drop_index("review_drafts_author", table_name="review_drafts")
    op.drop_index("review_drafts_state", table_name="review_drafts")
    op.drop_table("review_drafts")
