"""An index on the current versions in log order, for TAXII's "date added" pages.

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-04

TAXII pages a collection oldest added first (exchange/node/taxii): a page starts where the last
one stopped, at a record's current log entry (``records.seq``), and reads what it shows.
Without an index on ``records.seq`` every page would sort the whole table first.

``stix_ids`` maps the UUID of each STIX id a record's objects carry to the record, so a
lookup by id (``objects/{id}/``, ``match[id]``) reads one record instead of the collection.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_seq", "records", ["seq"])
    op.create_table(
        "stix_ids",
        sa.Column("uuid", sa.LargeBinary(16), nullable=False),
        sa.Column("rid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("uuid"),
    )


def downgrade() -> None:
    op.drop_table("stix_ids")
    op.drop_index("ix_records_seq", table_name="records")
