"""The index tables' rows no longer check their record's row on every insert.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

``observables``, ``record_countries`` and ``record_sectors`` hold a record's index rows,
derived from its current version: written by ``rows.write_index`` and removed by
``rows.clear_index`` in the transaction that writes or removes the record's row. Their
foreign key to ``records.rid`` checked, per index row inserted, a row the same transaction
had just written: on PostgreSQL a trigger and a lookup each (measured on a received batch:
about 25 us per record, a tenth of applying it; SQLite's check is cheaper but not free).
It guarded nothing a reader depends on: every search joins the index to ``records``, so a
row left behind by a bug would point at nothing and find nothing; and it is no defence
against a database writer, who can drop it (the seals are that defence).

SQLite cannot drop a constraint: each table is made again (as revision 0012 made it,
without the foreign key) and its rows copied.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TABLES = (
    ("observables", "type VARCHAR(32) NOT NULL, value VARCHAR(1024) NOT NULL, rid BIGINT NOT NULL, "
     "issued_at BIGINT NOT NULL, PRIMARY KEY (type, value, issued_at, rid)", "type, value, rid, issued_at",
     "ix_observables_rid"),
    ("record_countries", "country VARCHAR(8) NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (country, rid)",
     "country, rid", "ix_countries_rid"),
    ("record_sectors", "sector VARCHAR(64) NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (sector, rid)",
     "sector, rid", "ix_sectors_rid"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, *_ in _TABLES:
            op.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_rid_fkey")
        return
    for name, columns, copied, rid_index in _TABLES:
        op.execute(f"CREATE TABLE {name}_new ({columns}) WITHOUT ROWID")
        op.execute(f"INSERT INTO {name}_new ({copied}) SELECT {copied} FROM {name}")
        op.execute(f"DROP TABLE {name}")  # its indexes with it
        op.execute(f"ALTER TABLE {name}_new RENAME TO {name}")
        op.execute(f"CREATE INDEX {rid_index} ON {name} (rid)")


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
