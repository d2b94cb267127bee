"""The initial schema: the log, current records and their indexes, audit, sync state, liaison.

log.seq and records.rid are allocated by the store (max + 1 under the writers' lock), so
they have no sequence; the text index is FTS5 on SQLite and the terms table elsewhere.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('analyst_refs',
    sa.Column('originator', sa.String(length=32), nullable=False),
    sa.Column('submitter', sa.String(length=64), nullable=False),
    sa.Column('reference', sa.String(length=256), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('originator', 'submitter', 'reference')
    )
    op.create_table('audit',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=160), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_table('disclosure_index',
    sa.Column('originator', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('audit_seq', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('withdrawal', sa.Boolean(), nullable=False),
    sa.Column('partner', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('originator', 'record_id', 'audit_seq', 'version', 'withdrawal')
    )
    op.create_table('log',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('originator', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('payload_type', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=128), nullable=False),
    sa.Column('envelope', sa.LargeBinary(), nullable=False),
    sa.Column('received_from', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.BigInteger(), nullable=False),
    sa.Column('audience', sa.Text(), nullable=False),
    sa.Column('classification', sa.String(length=32), nullable=False),
    sa.Column('releasable_to', sa.Text(), nullable=False),
    sa.Column('tlp', sa.String(length=16), nullable=False),
    sa.Column('caveats', sa.Text(), nullable=False),
    sa.Column('purged', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('originator', 'record_id', 'version', 'payload_type', 'content_hash', name='uq_log_version')
    )
    op.create_index('ix_log_record', 'log', ['originator', 'record_id', 'version'])
    op.create_table('meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('peers',
    sa.Column('agency', sa.String(length=32), nullable=False),
    sa.Column('cursor', sa.LargeBinary(), nullable=False),
    sa.Column('last_success', sa.BigInteger(), nullable=True),
    sa.Column('last_attempt', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('needs_repair', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('agency')
    )
    op.create_table('quarantine',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('peer', sa.String(length=32), nullable=False),
    sa.Column('content_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('security_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('peer', sa.String(length=160), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('watch_entries',
    sa.Column('owner', sa.String(length=160), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('owner', 'id')
    )
    op.create_table('watch_keys',
    sa.Column('owner', sa.String(length=160), nullable=False),
    sa.Column('watch_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('value', sa.String(length=1024), nullable=False),
    sa.PrimaryKeyConstraint('owner', 'watch_id', 'type', 'value')
    )
    op.create_table('withdrawn',
    sa.Column('originator', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('below_version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('originator', 'record_id')
    )
    op.create_table('records',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('originator', sa.String(length=32), nullable=False),
    sa.Column('record_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('classification', sa.String(length=32), nullable=False),
    sa.Column('releasable_to', sa.Text(), nullable=False),
    sa.Column('tlp', sa.String(length=16), nullable=False),
    sa.Column('caveats', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('issued_at', sa.BigInteger(), nullable=False),
    sa.Column('equivocated', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['seq'], ['log.seq']),
    sa.PrimaryKeyConstraint('rid'),
    sa.UniqueConstraint('originator', 'record_id', name='uq_records_ref')
    )
    op.create_index('ix_records_issued', 'records', ['issued_at', 'rid'])
    op.create_table('observables',
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('value', sa.String(length=1024), nullable=False),
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['rid'], ['records.rid']),
    sa.PrimaryKeyConstraint('type', 'value', 'rid')
    )
    op.create_index('ix_observables_rid', 'observables', ['rid'])
    op.create_table('record_countries',
    sa.Column('country', sa.String(length=8), nullable=False),
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['rid'], ['records.rid']),
    sa.PrimaryKeyConstraint('country', 'rid')
    )
    op.create_index('ix_countries_rid', 'record_countries', ['rid'])
    op.create_table('record_sectors',
    sa.Column('sector', sa.String(length=64), nullable=False),
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['rid'], ['records.rid']),
    sa.PrimaryKeyConstraint('sector', 'rid')
    )
    op.create_index('ix_sectors_rid', 'record_sectors', ['rid'])
    op.create_table('terms',
    sa.Column('term', sa.String(length=64), nullable=False),
    sa.Column('rid', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['rid'], ['records.rid']),
    sa.PrimaryKeyConstraint('term', 'rid')
    )
    op.create_index('ix_terms_rid', 'terms', ['rid'])
    if op.get_bind().dialect.name == "sqlite":
        # The text index (exchange/store/textsearch.py): FTS5 over our own terms on SQLite.
        op.execute(
            "CREATE VIRTUAL TABLE record_text USING fts5(terms, tokenize = 'unicode61 remove_diacritics 0')"
        )
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.LargeBinary))
    op.bulk_insert(meta, [
        # Seals page tokens and cursors; never leaves the node.
        {"key": "token_key", "value": secrets.token_bytes(32)},
        # Names this log: a cursor from another log (or another database) is recognised as not ours.
        {"key": "log_epoch", "value": secrets.token_bytes(16)},
    ])


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
