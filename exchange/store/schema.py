"""Tables. SQLAlchemy Core, so the SQL each query runs stays visible.

Every key and index on records uses (originator, record_id); the integer
``rid`` is a local surrogate of that pair for compact side tables.
Times are integer microseconds since the epoch (UTC).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# The schema itself is built by the migrations in exchange/store/migrations; these tables
# are what the code reads and writes, and a test checks the two agree.

# SQLite's rowid alias must be INTEGER exactly; PostgreSQL gets 64 bits.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

# Every record version (and withdrawal) this node holds, its envelope verbatim.
log = Table(
    "log",
    metadata,
    # Allocated by the store under the writers' lock (store.next_ids), so entries commit in seq order.
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("originator", String(32), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", LargeBinary(32), nullable=False),
    Column("payload_type", String(64), nullable=False),
    Column("key_id", String(128), nullable=False, default=""),  # whose key signed it (compromise)
    Column("envelope", LargeBinary, nullable=False),
    Column("received_from", String(32), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    # The agencies this version's marking released it to (originator included);
    # kept after a purge, so a withdrawal can be routed to every earlier audience.
    Column("audience", Text, nullable=False, default=""),
    # This version's own marking (empty for a withdrawal): serving a version needs both
    # the current marking and this one to allow it (policy.decide_version).
    Column("classification", String(32), nullable=False, default=""),
    Column("releasable_to", Text, nullable=False, default=""),
    Column("tlp", String(16), nullable=False, default=""),
    Column("caveats", Text, nullable=False, default=""),
    # Payload purged after a withdrawal: the row stays so the version is never re-accepted.
    Column("purged", Boolean, nullable=False, default=False),
    # HMAC under the node's integrity key over the columns above that disclosure reads
    # (exchange/store/integrity.py); NULL: never sealed, never served.
    Column("mac", LargeBinary(32), nullable=True),
    # The same bytes under another payload type are another entry (a signature binds the type).
    UniqueConstraint("originator", "record_id", "version", "payload_type", "content_hash", name="uq_log_version"),
)
# (originator, record_id, version) lookups use uq_log_version's prefix.
Index("ix_log_received_from", log.c.received_from)

# The current version of each record, with its marking for the decision.
records = Table(
    "records",
    metadata,
    Column("rid", BigId, primary_key=True, autoincrement=False),  # allocated like log.seq
    Column("originator", String(32), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", BigInteger, ForeignKey("log.seq"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("classification", String(32), nullable=False),
    Column("releasable_to", Text, nullable=False),  # space-separated agency codes
    Column("tlp", String(16), nullable=False),
    Column("caveats", Text, nullable=False),  # space-separated
    Column("title", Text, nullable=False),
    Column("summary", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("equivocated", Boolean, nullable=False, default=False),
    Column("mac", LargeBinary(32), nullable=True),  # as log.mac (exchange/store/integrity.py)
    # Copies of the signed content for search prefilters (revision 0004). Not sealed: they
    # only narrow what a user is shown, never widen a disclosure; the "expired" a user
    # sees is computed from the signed validity itself (exchange/render.py).
    Column("confidence", Integer, nullable=False, default=0),
    # valid_from filters nothing yet (a not-yet-valid record is shown, labelled); kept so a
    # "valid now" filter needs no further migration.
    Column("valid_from", BigInteger, nullable=True),  # microseconds; NULL: no lower bound
    Column("valid_until", BigInteger, nullable=True),  # microseconds; NULL: never expires
    UniqueConstraint("originator", "record_id", name="uq_records_ref"),
)
# Newest first, with the classification, so a walk applies the clearance prefilter to the
# index entry before reading the row (revision 0016).
Index("ix_records_issued", records.c.issued_at, records.c.rid, records.c.classification)
# TAXII pages current versions in log order ("date added", exchange/node/taxii; revision 0009).
Index("ix_records_seq", records.c.seq)

# TAXII: which record each STIX id comes from (the UUID of ``type--UUID``; ids are UUIDv5 of
# the record, not reversible), kept by exchange/node/taxii/ids.py up to the log position in
# meta ``taxii_ids_seq``. Derived and unsealed: it only says where to look; the record found
# is still sealed-checked, judged by the decision and mapped again (revision 0009).
stix_ids = Table(
    "stix_ids",
    metadata,
    Column("uuid", LargeBinary(16), primary_key=True),
    Column("rid", BigInteger, nullable=False),
)

# The index tables are their key and nothing else: on SQLite each is stored as its key's
# B-tree (WITHOUT ROWID), beside the rid index that deletes and watch matching use, so a
# row costs two B-tree inserts instead of three or four (revision 0012). No foreign key to
# ``records``: index rows are written and removed with their record's row, in its transaction,
# and every search joins them to ``records`` (revision 0013 says what the check cost).
record_countries = Table(
    "record_countries",
    metadata,
    Column("country", String(8), primary_key=True),
    Column("rid", BigInteger, primary_key=True),
    sqlite_with_rowid=False,
)
record_sectors = Table(
    "record_sectors",
    metadata,
    Column("sector", String(64), primary_key=True),
    Column("rid", BigInteger, primary_key=True),
    sqlite_with_rowid=False,
)
observables = Table(
    "observables",
    metadata,
    Column("type", String(32), nullable=False),
    Column("value", String(1024), nullable=False),  # normalised (exchange.records.normalize)
    Column("rid", BigInteger, nullable=False),
    # The record's issued_at, copied (rewritten with the index rows whenever the current
    # version changes), so a lookup walks the key in the order search answers (newest
    # issued first) and stops when its page is full, instead of fetching and sorting
    # every record that carries a popular value. In the key, so the key is that walk
    # (revision 0012; it was ix_observables_newest beside a key without it). (type, value,
    # rid) stays unique: a record's rows all carry its one issued_at.
    Column("issued_at", BigInteger, nullable=False),
    # The record's classification, copied the same way (revision 0014), so the walk applies
    # the user's clearance prefilter to the index row itself instead of looking each entry's
    # record up first (at 1,000,000 records a user may see a tenth of them). Not sealed: it
    # only narrows what a search considers; the decision reads the sealed records row.
    Column("classification", String(32), nullable=False, server_default=""),
    # PostgreSQL keeps the classification in the key's leaf entries too (revision 0015), so
    # the walk is an index-only scan; SQLite's table is the key's B-tree already.
    PrimaryKeyConstraint("type", "value", "issued_at", "rid", name="observables_pkey",
                         postgresql_include=["classification"]),
    sqlite_with_rowid=False,
)
# The text index is per dialect: exchange/store/textsearch.py.
Index("ix_observables_rid", observables.c.rid)
Index("ix_countries_rid", record_countries.c.rid)
Index("ix_sectors_rid", record_sectors.c.rid)

# The analyst's own reference, kept locally (never shared with partners).
references = Table(
    "analyst_refs",
    metadata,
    Column("originator", String(32), primary_key=True),
    Column("submitter", String(64), primary_key=True),
    Column("reference", String(256), primary_key=True),
    Column("record_id", String(36), nullable=False),
)

# Hash-chained audit log of submissions and disclosures (keyed: exchange/store/audit.py).
audit = Table(
    "audit",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(160), nullable=False),
    Column("action", String(32), nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# Records refused on receipt: only the envelope's hash and the reason are kept.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("peer", String(32), nullable=False),
    Column("content_hash", LargeBinary(32), nullable=False),
    Column("reason", Text, nullable=False),
)

# What an operator watches: refused records, equivocation, identity mismatches.
security_events = Table(
    "security_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("peer", String(160), nullable=False),
    Column("detail", Text, nullable=False),  # JSON
)

# Where this node is in each partner's log.
peers = Table(
    "peers",
    metadata,
    Column("agency", String(32), primary_key=True),
    Column("cursor", LargeBinary, nullable=False),
    Column("last_success", BigInteger, nullable=True),
    Column("last_attempt", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    # Set when the manifest changed: the next pull reconciles by digest first.
    Column("needs_repair", Boolean, nullable=False, default=False),
)

# Records withdrawn below a version: earlier versions arriving late are not accepted.
withdrawn = Table(
    "withdrawn",
    metadata,
    Column("originator", String(32), primary_key=True),
    Column("record_id", String(36), primary_key=True),
    Column("below_version", Integer, nullable=False),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

# Every manifest version the node has trusted (exchange/store/manifests.py), as received:
# the node starts from the newest, after checking the chain again (revision 0007).
manifests = Table(
    "manifests",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("document", LargeBinary, nullable=False),  # the signed TOML document
    Column("adopted_at", BigInteger, nullable=False),
    Column("source", String(160), nullable=False),  # "file" (installed by the operator) or the partner's code
)

# --- liaison (exchange/store/watch.py) --------------------------------------------------

# Side index of the audit log's pull disclosures, written in the audit entry's own
# transaction, so "which partners received this record" needs no scan of the log.
# Derived data: the audit entry (audit_seq) is the record of the disclosure.
disclosure_index = Table(
    "disclosure_index",
    metadata,
    Column("originator", String(32), primary_key=True),
    Column("record_id", String(36), primary_key=True),
    Column("audit_seq", BigInteger, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("withdrawal", Boolean, primary_key=True),  # a withdrawal below ``version`` was sent
    Column("partner", String(32), nullable=False),
    Column("mac", LargeBinary(32), nullable=True),  # as log.mac; checked against the audit chain
)

# A user's watch list: observables of interest, as entered; ids are per user.
watch_entries = Table(
    "watch_entries",
    metadata,
    Column("owner", String(160), primary_key=True),  # identity URI
    Column("id", Integer, primary_key=True),
    Column("type", String(32), nullable=False),  # empty: any type
    Column("value", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # A notify target named in node.toml ([[notify]]): hits are pushed to it (exchange/node/notify.py).
    Column("notify", String(64), nullable=True),
)

# The normalised keys each watch entry matches in ``observables`` (several for "any type").
watch_keys = Table(
    "watch_keys",
    metadata,
    Column("owner", String(160), primary_key=True),
    Column("watch_id", Integer, primary_key=True),
    Column("type", String(32), primary_key=True),
    Column("value", String(1024), primary_key=True),
)

# Release review (exchange/store/review.py): drafts held until disclosure officers approve
# them. Apart from log and records on purpose: no serving path reads this table, so a held
# draft cannot reach a partner by any query, pull or digest.
review_drafts = Table(
    "review_drafts",
    metadata,
    Column("draft_id", String(36), primary_key=True),
    Column("originator", String(32), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("base_version", Integer, nullable=False),  # 0: a new record
    Column("author", String(64), nullable=False),  # the analyst's handle
    Column("reference", String(256), nullable=False),
    Column("draft", LargeBinary, nullable=False),  # the RecordDraft as submitted
    Column("approvals_needed", Integer, nullable=False),
    Column("rule", Text, nullable=False),  # why that many approvals, for people
    Column("state", String(16), nullable=False),  # held, released, rejected
    Column("reason", Text, nullable=False),  # a rejection's reason, for the analyst
    Column("submitted_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Column("released_version", Integer, nullable=True),
    Column("mac", LargeBinary(32), nullable=False),  # integrity.draft_mac
    Index("review_drafts_state", "state", "submitted_at"),
    Index("review_drafts_author", "author", "reference"),
    # An author's reference holds one draft at a time (migration 0011): a resubmission, even a
    # concurrent one, gets the held draft back instead of holding a second. Revisions carry no
    # reference (""), and released or rejected drafts free it.
    Index("review_drafts_held_reference", "author", "reference", unique=True,
          sqlite_where=text("state = 'held' AND reference <> ''"),
          postgresql_where=text("state = 'held' AND reference <> ''")),
)

review_approvals = Table(
    "review_approvals",
    metadata,
    Column("draft_id", String(36), ForeignKey("review_drafts.draft_id"), primary_key=True),
    Column("officer", String(64), primary_key=True),  # a disclosure officer's handle
    Column("at", BigInteger, nullable=False),
    Column("mac", LargeBinary(32), nullable=False),  # integrity.approval_mac
)

# --- sightings and alerts (exchange/store/sightings.py, exchange/store/outbox.py) -------

# Sightings this node reported (reporter = this agency: served by PullSightings) and those
# it received from partners on records it holds. The envelope is kept verbatim: what is
# served, and what the decision reads (the release list), is the signed payload.
sightings = Table(
    "sightings",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("reporter", String(32), nullable=False),
    Column("sighting_id", String(36), nullable=False),
    Column("reported_by", String(64), nullable=False),
    Column("originator", String(32), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("record_version", Integer, nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("holder", String(32), nullable=False),  # a relay report's holder; "" otherwise
    Column("reported_at", BigInteger, nullable=False),
    Column("envelope", LargeBinary, nullable=False),
    Column("received_from", String(32), nullable=False),  # the own code for the own reports
    Column("received_at", BigInteger, nullable=False),
    UniqueConstraint("reporter", "sighting_id", name="uq_sightings_id"),
)
Index("ix_sightings_record", sightings.c.originator, sightings.c.record_id)

# Where this node is in each partner's sightings (a stream of its own beside the log).
sighting_peers = Table(
    "sighting_peers",
    metadata,
    Column("agency", String(32), primary_key=True),
    Column("cursor", LargeBinary, nullable=False),
)

# Watch hits to push to a notify target: written once per (user, target, record version),
# marked delivered in the transaction that audits the delivery.
watch_outbox = Table(
    "watch_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("owner", String(160), nullable=False),
    Column("target", String(64), nullable=False),
    Column("originator", String(32), nullable=False),
    Column("record_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("owner", "target", "originator", "record_id", "version", name="uq_watch_outbox_hit"),
    Index("ix_watch_outbox_delivered", "delivered_at"),  # pruning delivered rows (migration 0011)
)

# How far the notifier has looked, per user and notify target: the log position (``log.seq``)
# up to which the current versions were checked for hits (migration 0011). A round reads only
# what entered the log since; and a hit at or below the mark is never queued again, so a
# delivered hit pruned from the outbox is never sent twice.
watch_notify_marks = Table(
    "watch_notify_marks",
    metadata,
    Column("owner", String(160), primary_key=True),
    Column("target", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

# Watch hits a user marked seen (a record version: a revision is a hit again).
watch_seen = Table(
    "watch_seen",
    metadata,
    Column("owner", String(160), primary_key=True),
    Column("originator", String(32), primary_key=True),
    Column("record_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("at", BigInteger, nullable=False),
)
