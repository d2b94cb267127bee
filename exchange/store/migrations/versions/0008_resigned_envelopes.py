"""A re-signed envelope is another log entry: the signing key joins the log's unique key.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-04

``exchange records resign`` signs a record version's very bytes again with the
originator's new key (after a rotation, or after the old key was marked compromised).
The new envelope has the content hash of the old one, so under the unique key
(originator, record_id, version, payload_type, content_hash) it could only be a
duplicate. It must be a new entry instead, with a new seq, so that it travels to
every holder by ordinary pulls (exchange/store/resign.py); the row it replaces stays,
purged, so cursors that point at it keep their fingerprint. ``key_id`` joins the key.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0004"
branch_labels = None
depends_on = None

_OLD = ["originator", "record_id", "version", "payload_type", "content_hash"]


def upgrade() -> None:
    # SQLite cannot drop a constraint in place: batch mode copies the table (once, at upgrade).
    with op.batch_alter_table("log") as batch:
        batch.drop_constraint("uq_log_version", type_="unique")
        batch.create_unique_constraint("uq_log_version", [*_OLD, "key_id"])


def downgrade() -> None:
    # The replaced (purged) entry of each re-signed version goes: one entry per content again.
    op.execute(
        "DELETE FROM log WHERE purged AND EXISTS (SELECT 1 FROM log AS newer WHERE "
        "newer.originator = log.originator AND newer.record_id = log.record_id AND newer.version = log.version "
        "AND newer.payload_type = log.payload_type AND newer.content_hash = log.content_hash "
        "AND newer.seq > log.seq)"
    )
    with op.batch_alter_table("log") as batch:
        batch.drop_constraint("uq_log_version", type_="unique")
        batch.create_unique_constraint("uq_log_version", _OLD)
