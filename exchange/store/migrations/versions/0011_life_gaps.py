"""One held draft per reference; the notifier's marks and outbox pruning; TAXII ids re-indexed.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-04

A resubmission with a reference already held returns that draft (exchange/store/review.py);
before this index two concurrent submissions could each hold one. A partial unique index
(held drafts with a reference; SQLite and PostgreSQL both have them) makes the second
insert fail, and the node answers with the draft that won.

A database where the race already happened would refuse the index: the later duplicates
are rejected first, with a reason the analyst sees (``state`` and ``reason`` are not under
the draft's seal, so this leaves every row verifiable). The earliest draft stays held.

``watch_notify_marks``: per user and notify target, the log position up to which the notifier
looked for hits (exchange/node/notify.py), so a round reads only what is new; an index on
``watch_outbox.delivered_at`` for pruning delivered rows. A database upgraded with hits
already delivered has no marks yet: the first round looks at everything once, and the
outbox (not yet pruned) keeps those hits from being queued again.

The STIX mapping now gives a record with translations one more object (``language-content``):
the TAXII id index (``stix_ids``, exchange/node/taxii/ids.py) is started over (its mark in
``meta`` removed), so the next lookup indexes every record's ids again, the new ones with them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None

HELD_WITH_REFERENCE = "state = 'held' AND reference <> ''"


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE review_drafts SET state = 'rejected', "
        "reason = 'a second draft of the same reference (held twice by a race); the first is still held' "
        f"WHERE {HELD_WITH_REFERENCE} AND EXISTS (SELECT 1 FROM review_drafts AS first "
        "WHERE first.author = review_drafts.author AND first.reference = review_drafts.reference "
        "AND first.state = 'held' AND (first.submitted_at < review_drafts.submitted_at "
        "OR (first.submitted_at = review_drafts.submitted_at AND first.draft_id < review_drafts.draft_id)))"
    ))
    op.create_index("review_drafts_held_reference", "review_drafts", ["author", "reference"], unique=True,
                    sqlite_where=sa.text(HELD_WITH_REFERENCE), postgresql_where=sa.text(HELD_WITH_REFERENCE))
    op.create_table(
        "watch_notify_marks",
        sa.Column("owner", sa.String(160), primary_key=True),
        sa.Column("target", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_watch_outbox_delivered", "watch_outbox", ["delivered_at"])
    op.execute(sa.text("DELETE FROM meta WHERE key = 'taxii_ids_seq'"))


def downgrade() -> None:
    op.drop_index("ix_watch_outbox_delivered", table_name="watch_outbox")
    op.drop_table("watch_notify_marks")
    op.drop_index("review_drafts_held_reference", table_name="review_drafts")
