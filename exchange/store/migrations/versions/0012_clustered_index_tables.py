"""The index tables hold their rows in their key's order: fewer B-trees per record stored.

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-04

A received record writes a row into ``observables`` for each of its observables and one
into ``record_countries`` and ``record_sectors`` for each country and sector. On SQLite
each of those tables was a rowid table beside its own primary-key index and its ``rid``
index: three B-trees per row (four for ``observables``, with ``ix_observables_newest``),
where the row itself is nothing but its key.

- SQLite: the three tables become ``WITHOUT ROWID`` (the table is the primary key's
  B-tree), keeping the ``rid`` index that deletes and watch matching use: two B-trees each.
- ``observables``' primary key becomes (type, value, issued_at, rid), the columns of
  ``ix_observables_newest``, which goes: a lookup walks the key itself newest first. The
  key stays unique on (type, value, rid), as before: a record's rows all carry its one
  ``issued_at`` (they are rewritten together whenever its current version changes).
  PostgreSQL keeps its heap, and drops the same index.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# SQLite cannot change a table's key in place: each table is made again and its rows copied.
_SQLITE_TABLES = (
    ("observables", "type VARCHAR(32) NOT NULL, value VARCHAR(1024) NOT NULL, rid BIGINT NOT NULL, "
     "issued_at BIGINT NOT NULL, PRIMARY KEY (type, value, issued_at, rid)", "type, value, rid, issued_at",
     "ix_observables_rid"),
    ("record_countries", "country VARCHAR(8) NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (country, rid)",
     "country, rid", "ix_countries_rid"),
    ("record_sectors", "sector VARCHAR(64) NOT NULL, rid BIGINT NOT NULL, PRIMARY KEY (sector, rid)",
     "sector, rid", "ix_sectors_rid"),
)


def upgrade() -> None:
    op.drop_index("ix_observables_newest", table_name="observables")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE observables DROP CONSTRAINT observables_pkey, "
                   "ADD CONSTRAINT observables_pkey PRIMARY KEY (type, value, issued_at, rid)")
        return
    for name, columns, copied, rid_index in _SQLITE_TABLES:
        op.execute(f"CREATE TABLE {name}_new ({columns}, FOREIGN KEY(rid) REFERENCES records (rid)) WITHOUT ROWID")
        op.execute(f"INSERT INTO {name}_new ({copied}) SELECT {copied} FROM {name}")
        op.execute(f"DROP TABLE {name}")  # its indexes with it
        op.execute(f"ALTER TABLE {name}_new RENAME TO {name}")
        op.execute(f"CREATE INDEX {rid_index} ON {name} (rid)")


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
