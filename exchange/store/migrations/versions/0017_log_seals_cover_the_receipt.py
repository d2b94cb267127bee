"""A log entry's seal covers its receipt: the partner it came from and when.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

``received_from`` and ``received_at`` were outside the seal, so an insider who edits the
database could change them unnoticed. They matter: a user is shown ``received_from`` as a
record's provenance; TAXII dates entries by ``received_at`` (and pages by it); and the node
re-signs only the entries it wrote itself (``received_from`` its own agency) after a key
leak, so that a forgery relayed by a partner is never made valid under the new key
(exchange/store/resign.py).

No column changes. The seals are renewed by ``migrate.upgrade`` with the node's integrity key,
in the same transaction (``sealcheck.seal_receipts``): each entry's seal is checked as
revisions 0003 to 0016 made it, and only an entry that passes is sealed anew, so an edit made
before the upgrade is still reported after it, never blessed.
"""

from __future__ import annotations

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # the seals are renewed with the key, after the revisions (exchange/store/migrate.py)


def downgrade() -> None:
    raise NotImplementedError("the node's schema is never downgraded; restore a backup instead")
