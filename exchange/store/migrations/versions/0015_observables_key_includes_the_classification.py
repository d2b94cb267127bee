"""PostgreSQL: the observables key carries the classification, so a lookup walks the key alone.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05

Revision 0014 copied each record's classification into its observables rows so a lookup
applies the user's clearance to the index row. On SQLite the table is its key's B-tree
(``WITHOUT ROWID``), so the walk reads the classification where it reads the key. On
PostgreSQL the key is an index beside the heap: every entry walked cost a heap visit to
read the classification, about ten per record shown where a user may see a tenth of them
(measured at 1,000,000 records: 457 entries skipped for a page of 51, 4.9 ms; with the
classification in the key, an index-only scan, 1.6 ms). The primary key is made again
with ``INCLUDE (classification)``: not part of the key's uniqueness or order, stored in its
leaf entries. (An index-only scan skips the heap only on pages the visibility map marks
all-visible, which autovacuum maintains; elsewhere it reads the heap as before.)
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: the table is the key's B-tree already
    op.execute("ALTER TABLE observables DROP CONSTRAINT observables_pkey, "
               "ADD CONSTRAINT observables_pkey PRIMARY KEY (type, value, issued_at, rid) INCLUDE (classification)")


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
