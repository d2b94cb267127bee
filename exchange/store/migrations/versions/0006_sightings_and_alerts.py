"""Sightings, their pull cursors, and pushed watch hits.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-04

- ``sightings``: sightings this node reported and those it received (envelopes verbatim).
- ``sighting_peers``: this node's cursor in each partner's sightings.
- ``watch_entries.notify``: the notify target of a watch entry (NULL: none).
- ``watch_outbox``: hits waiting to be pushed, and when each was delivered.
- ``watch_seen``: hits a user marked seen.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sightings",
        sa.Column("seq", _ID, autoincrement=True, nullable=False),
        sa.Column("reporter", sa.String(length=32), nullable=False),
        sa.Column("sighting_id", sa.String(length=36), nullable=False),
        sa.Column("reported_by", sa.String(length=64), nullable=False),
        sa.Column("originator", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("record_version", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=32), nullable=False),
        sa.Column("reported_at", sa.BigInteger(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("received_from", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("reporter", "sighting_id", name="uq_sightings_id"),
    )
    op.create_index("ix_sightings_record", "sightings", ["originator", "record_id"])
    op.create_table(
        "sighting_peers",
        sa.Column("agency", sa.String(length=32), nullable=False),
        sa.Column("cursor", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("agency"),
    )
    op.add_column("watch_entries", sa.Column("notify", sa.String(length=64), nullable=True))
    op.create_table(
        "watch_outbox",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=160), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("originator", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "target", "originator", "record_id", "version", name="uq_watch_outbox_hit"),
    )
    op.create_table(
        "watch_seen",
        sa.Column("owner", sa.String(length=160), nullable=False),
        sa.Column("originator", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "originator", "record_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("watch_seen")
    op.drop_table("watch_outbox")
    op.drop_column("watch_entries", "notify")
    op.drop_table("sighting_peers")
    op.drop_index("ix_sightings_record", table_name="sightings")
    op.drop_table("sightings")
