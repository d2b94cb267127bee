"""Each observable's index row carries its record's classification.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05

A lookup of one observable walks its index rows newest first and joins each to its record
to apply the user's clearance prefilter (exchange/store/search.py). At 1,000,000 records,
where a user may see a tenth of them, a full page of a value held by a few thousand records
looked up about ten records for each one shown, each a random page: most of a lookup's time.
The classification is copied into the index row (rewritten with it whenever the record's
current version changes, as ``issued_at`` is), so the walk skips those rows without the
lookup. It is not sealed: it only narrows what a search considers; the disclosure decision
still reads the sealed ``records`` row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("observables", sa.Column("classification", sa.String(32), nullable=False, server_default=""))
    # An index row without its record (none is written so; revision 0013 removed the foreign
    # key that made it impossible) gets no classification: no walk with a prefilter finds it.
    op.execute("UPDATE observables SET classification = COALESCE("
               "(SELECT records.classification FROM records WHERE records.rid = observables.rid), '')")


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
