"""The hash-chained audit log of submissions and disclosures.

Entry n stores hash(n) = HMAC-SHA256(integrity key, hash(n-1) || canonical JSON of
its fields); the head (last seq and hash) is also kept in ``meta``, and after each
commit in an anchor file beside the key (exchange/store/integrity.py). Editing a row
breaks its hash, deleting one breaks the chain or the head, and since the hashes are
keyed, a database writer without the key cannot recompute a rewritten tail; a
truncated one (head recomputed, or rolled back to an earlier entry) no longer reaches
the anchored head. ``exchange audit verify`` detects each.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, select, text

from exchange.errors import ConfigError
from exchange.store import integrity
from exchange.store.bulk import insert_many
from exchange.store.engine import AUDIT_LOCK, serialise_audit
from exchange.store.schema import audit, meta

GENESIS = b"\x00" * 32
HEAD_KEY = "audit_head"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: int  # microseconds since the epoch
    actor: str
    action: str
    detail: dict[str, Any]


def _body(seq: int, at: int, actor: str, action: str, detail: str) -> bytes:
    return json.dumps([seq, at, actor, action, detail], ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def entry_hash(seal: integrity.Integrity, prev_hash: bytes, seq: int, at: int, actor: str, action: str,
               detail: str) -> bytes:
    return seal.chain(prev_hash, _body(seq, at, actor, action, detail))


def unkeyed_hash(prev_hash: bytes, seq: int, at: int, actor: str, action: str, detail: str) -> bytes:
    """The chain's hash before revision 0003 (plain SHA-256): only to check an old chain once,
    before ``rekey`` keys it."""
    return hashlib.sha256(prev_hash + _body(seq, at, actor, action, detail)).digest()


def _read_head(conn: Connection) -> tuple[int, bytes]:
    row = conn.execute(select(meta.c.value).where(meta.c.key == HEAD_KEY)).scalar_one_or_none()
    if row is None:
        return 0, GENESIS
    return int.from_bytes(row[:8], "big"), row[8:]


def append(conn: Connection, *, at: int, actor: str, action: str, detail: dict[str, Any]) -> int:
    """Append one entry inside the caller's (write) transaction; returns its seq.

    Takes the audit chain's lock first (PostgreSQL): appends are serialised, and the head
    read here is the last committed one.
    """
    serialise_audit(conn)
    seal = integrity.of(conn)
    last_seq, last_hash = _read_head(conn)
    seq = last_seq + 1
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    digest = entry_hash(seal, last_hash, seq, at, actor, action, text)
    conn.execute(
        audit.insert().values(
            seq=seq, at=at, actor=actor, action=action, detail=text, prev_hash=last_hash, hash=digest
        )
    )
    _extended(conn, seal, last_seq, last_hash, seq, digest)
    return seq


def append_many(conn: Connection, *, at: int, entries: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    """Append one entry per (actor, action, detail), in order, as ``append`` would each: the
    chain is read and its head moved once, and the entries are inserted in one statement."""
    _append_texts(conn, [(at, actor, action, _detail_text(detail)) for actor, action, detail in entries])


def _detail_text(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _append_texts(conn: Connection, entries: Sequence[tuple[int, str, str, str]]) -> int:
    """Append (at, actor, action, detail as text) entries in order; returns the first one's seq."""
    if not entries:
        return 0
    return _append_read(conn, entries)[0] - len(entries) + 1


def _append_read(conn: Connection, entries: Sequence[tuple[int, str, str, str]]) -> tuple[int, bytes]:
    """Append (at, actor, action, detail as text) entries, at least one, after the head read
    under the chain's lock; returns the new head (seq, hash)."""
    serialise_audit(conn)
    seal = integrity.of(conn)
    last_seq, last_hash = _read_head(conn)
    rows = _chained(seal, last_seq, last_hash, entries)
    insert_many(conn, audit, ("seq", "at", "actor", "action", "detail", "prev_hash", "hash"), rows)
    seq, digest = rows[-1][0], rows[-1][-1]
    _extended(conn, seal, last_seq, last_hash, seq, digest)
    return seq, digest


def _chained(seal: integrity.Integrity, last_seq: int, last_hash: bytes,
             entries: Sequence[tuple[int, str, str, str]]) -> list[tuple[Any, ...]]:
    """The audit rows of (at, actor, action, detail as text) entries after (last_seq, last_hash):
    (seq, at, actor, action, detail, prev_hash, hash), each hash chained to the one before."""
    rows: list[tuple[Any, ...]] = []
    seq, digest = last_seq, last_hash
    for at, actor, action, detail in entries:
        seq += 1
        previous, digest = digest, entry_hash(seal, digest, seq, at, actor, action, detail)
        rows.append((seq, at, actor, action, detail, previous, digest))
    return rows


def _extended(conn: Connection, seal: integrity.Integrity, last_seq: int, last_hash: bytes, seq: int,
              digest: bytes) -> None:
    """Move the chain's head from (last_seq, last_hash) to (seq, digest), and anchor it."""
    head = seq.to_bytes(8, "big") + digest
    if last_seq == 0 and last_hash == GENESIS:
        conn.execute(meta.insert().values(key=HEAD_KEY, value=head))
    else:
        conn.execute(meta.update().where(meta.c.key == HEAD_KEY).values(value=head))
    _anchor_after(conn, seal, last_seq, last_hash, seq, digest)


# PostgreSQL, where each statement is a round trip: a disclosure's entries appended in one
# statement, from the head this process wrote last (``_append_after``). It takes the chain's
# lock, moves the head only if it is still the one given (else nothing is written, and the
# caller appends the usual way: lock, read the head, insert, move it), and inserts the entries
# only if it moved. Under READ COMMITTED an UPDATE that found the row before the lock was
# granted checks its condition again on the newest committed version before changing it, so a
# head another writer moved meanwhile is seen as moved.
_APPEND_AFTER = text("""
WITH locked AS (SELECT pg_advisory_xact_lock(:lock, hashtext(current_schema()))),
moved AS (
    UPDATE meta SET value = :head WHERE key = :key AND value = :expected AND EXISTS (SELECT FROM locked)
    RETURNING 1
)
INSERT INTO audit (seq, at, actor, action, detail, prev_hash, hash)
SELECT * FROM unnest(CAST(:seqs AS bigint[]), CAST(:ats AS bigint[]), CAST(:actors AS text[]),
                     CAST(:actions AS text[]), CAST(:details AS text[]), CAST(:prevs AS bytea[]),
                     CAST(:hashes AS bytea[]))
WHERE EXISTS (SELECT FROM moved)
""")


def _append_after(conn: Connection, head: tuple[int, bytes], entries: Sequence[tuple[int, str, str, str]]
                  ) -> tuple[int, bytes] | None:
    """Append (at, actor, action, detail as text) entries, at least one, after ``head`` = (seq,
    hash) in one statement (PostgreSQL); returns the new head, or None if ``head`` is no longer
    the chain's (nothing was written)."""
    seal = integrity.of(conn)
    last_seq, last_hash = head
    rows = _chained(seal, last_seq, last_hash, entries)
    seq, digest = rows[-1][0], rows[-1][-1]
    columns = list(zip(*rows, strict=True))
    inserted = conn.execute(_APPEND_AFTER, {
        "lock": AUDIT_LOCK, "key": HEAD_KEY, "expected": last_seq.to_bytes(8, "big") + last_hash,
        "head": seq.to_bytes(8, "big") + digest, "seqs": list(columns[0]), "ats": list(columns[1]),
        "actors": list(columns[2]), "actions": list(columns[3]), "details": list(columns[4]),
        "prevs": list(columns[5]), "hashes": list(columns[6]),
    }).rowcount
    if inserted != len(rows):
        if inserted:  # never: the head moved, or every entry went in (the same statement)
            raise RuntimeError(f"{inserted} of {len(rows)} audit entries inserted")
        return None
    _anchor_after(conn, seal, last_seq, last_hash, seq, digest)
    return seq, digest


def _anchor_after(conn: Connection, seal: integrity.Integrity, last_seq: int, last_hash: bytes, seq: int,
                  digest: bytes) -> None:
    """The head moved from (last_seq, last_hash) to (seq, digest): anchor it once committed."""
    if _holds_anchor(conn, seal, last_seq, last_hash):
        seal.written_head(seq, digest)  # anchored once this transaction commits
    else:
        seal.anchor_broken()  # the anchor stays as evidence; one event, after this commit


def _holds_anchor(conn: Connection, seal: integrity.Integrity, last_seq: int, last_hash: bytes) -> bool:
    """Does the chain being extended still hold the anchored head? Usually the anchored head is
    the last entry (no query); with several replicas, one lookup by seq."""
    anchored = seal.last_anchored
    if anchored is None:
        return True
    seq, digest = anchored
    if seq >= last_seq:
        return seq == last_seq and hmac.compare_digest(digest, last_hash)
    found = conn.execute(select(audit.c.hash).where(audit.c.seq == seq)).scalar_one_or_none()
    return found is not None and hmac.compare_digest(bytes(found), digest)


def verify(conn: Connection) -> list[str]:
    """Every inconsistency in the chain, in order; an empty list means intact."""
    seal = integrity.of(conn)
    anchored = seal.anchored()
    reached: bytes | None = None  # the hash of the anchored entry, as the chain has it
    problems: list[str] = []
    expected_seq, prev = 1, GENESIS
    for row in conn.execute(select(audit).order_by(audit.c.seq)):
        if row.seq != expected_seq:
            problems.append(f"entry {expected_seq} is missing (next is {row.seq})")
        if row.prev_hash != prev:
            problems.append(f"entry {row.seq} does not chain to the entry before it")
        if not hmac.compare_digest(entry_hash(seal, row.prev_hash, row.seq, row.at, row.actor, row.action,
                                              row.detail), bytes(row.hash)):
            problems.append(f"entry {row.seq} was altered (its hash does not match its content)")
        if anchored is not None and row.seq == anchored[0]:
            reached = bytes(row.hash)
        expected_seq, prev = row.seq + 1, bytes(row.hash)
    head_seq, head_hash = _read_head(conn)
    if (head_seq, head_hash) != (expected_seq - 1, prev):
        problems.append(f"the chain ends at entry {expected_seq - 1} but the recorded head is entry {head_seq}")
    if anchored is None:
        if seal.anchor is not None and expected_seq > 1:
            problems.append(f"no anchor of the audit head at {seal.anchor}: a truncated chain cannot be ruled out")
    elif reached is None or not hmac.compare_digest(reached, anchored[1]):
        problems.append(f"the chain does not reach the anchored head, entry {anchored[0]} "
                        f"(it ends at entry {expected_seq - 1}): entries were removed or rewritten")
    return problems


def keyed_by(conn: Connection, seal: integrity.Integrity) -> bool | None:
    """Whether the chain's last entry was hashed under ``seal``'s key (None: the chain is empty).
    An upgrade that seals rows anew asks it first: under another key, every row would read as
    edited."""
    row = conn.execute(select(audit).order_by(audit.c.seq.desc()).limit(1)).first()
    if row is None:
        return None
    return hmac.compare_digest(entry_hash(seal, bytes(row.prev_hash), row.seq, row.at, row.actor, row.action,
                                          row.detail), bytes(row.hash))


def rekey(conn: Connection, seal: integrity.Integrity) -> None:
    """Revision 0003: check the unkeyed chain, then key it (every hash recomputed under the key).

    Refused over a chain that does not verify: keying it would launder an edit.
    """
    prev, keyed = GENESIS, GENESIS
    rows = conn.execute(select(audit).order_by(audit.c.seq)).all()
    for expected, row in enumerate(rows, start=1):
        fields = (row.seq, row.at, row.actor, row.action, row.detail)
        if row.seq != expected or bytes(row.prev_hash) != prev or unkeyed_hash(prev, *fields) != bytes(row.hash):
            raise ConfigError(f"the audit log is damaged at entry {expected} (`exchange audit verify` says more); "
                              "it is not re-keyed over damage: restore a backup, or keep this database as evidence")
        prev = bytes(row.hash)
        digest = entry_hash(seal, keyed, *fields)
        conn.execute(audit.update().where(audit.c.seq == row.seq).values(prev_hash=keyed, hash=digest))
        keyed = digest
    if _read_head(conn) != (len(rows), prev):
        raise ConfigError("the audit log's recorded head is not its last entry (`exchange audit verify` says more); "
                          "it is not re-keyed over damage: restore a backup, or keep this database as evidence")
    if rows:
        conn.execute(meta.update().where(meta.c.key == HEAD_KEY).values(value=len(rows).to_bytes(8, "big") + keyed))
        seal.written_head(len(rows), keyed)


def entries(conn: Connection, *, action: str | None = None) -> Iterator[AuditEntry]:
    query = select(audit).order_by(audit.c.seq)
    if action is not None:
        query = query.where(audit.c.action == action)
    for row in conn.execute(query):
        yield AuditEntry(row.seq, row.at, row.actor, row.action, json.loads(row.detail))


# --- over a store ------------------------------------------------------------------------------


class Store(Protocol):
    """What these functions use of :class:`exchange.store.store.Store` (which imports the
    migrations, which re-key this chain: a Protocol keeps the import one way)."""

    @property
    def engine(self) -> Engine: ...

    def write(self, *, durable: bool = True, audit_only: bool = False, one_statement: bool = False
              ) -> AbstractContextManager[Connection]: ...


def now_us() -> int:
    return time.time_ns() // 1000


def record(store: Store, *, actor: str, action: str, detail: dict[str, Any]) -> int:
    """Append one entry in a transaction of its own (a disclosure: see ``Store.write(audit_only=True)``);
    returns its seq once that transaction has committed.

    Group commit: entries that callers on other threads record meanwhile share the
    transaction, so concurrent queries pay one commit (one fsync on SQLite) between them
    instead of queueing for one each. Nothing is weaker for it: every caller returns (and
    so answers) only after the commit holding its entry, and if that commit fails every
    caller in it gets the error; a crash can lose only entries whose callers have not
    answered yet. The chain's order is the order the entries were queued in.
    """
    mine = _Pending(now_us(), actor, action, _detail_text(detail))  # a bad detail fails here, alone
    group = _group_of(store)
    with group.lock:
        group.queue.append(mine)
        lead = not group.leading
        group.leading = True
    while not lead:
        mine.wake.wait()
        if mine.seq or mine.error is not None:
            break
        mine.wake.clear()
        lead = True  # handed the lead by the writer before (``_lead``): this entry is still queued
    if lead:
        _lead(store, group)
    if mine.error is not None:
        raise mine.error
    return mine.seq


@dataclass
class _Pending:
    at: int
    actor: str
    action: str
    text: str
    wake: threading.Event = field(default_factory=threading.Event)
    seq: int = 0  # set once committed
    error: BaseException | None = None


@dataclass
class _Group:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Pending] = field(default_factory=list)
    leading: bool = False  # a thread is writing (or about to write) the queue
    # PostgreSQL: the head the last transaction of this group committed, as (seq, hash); the
    # next one appends after it in one statement if it is still the chain's (``_append_after``).
    head: tuple[int, bytes] | None = None


_GROUPS: weakref.WeakKeyDictionary[Store, _Group] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()


def _group_of(store: Store) -> _Group:
    with _GROUPS_LOCK:
        group = _GROUPS.get(store)
        if group is None:
            group = _GROUPS[store] = _Group()
        return group


def _lead(store: Store, group: _Group) -> None:
    """Write everything queued in one transaction, wake its callers, and hand the lead to
    the first caller queued meanwhile (so no caller waits beyond its own entry's commit)."""
    with group.lock:
        batch, group.queue = group.queue, []
    head, group.head = group.head, None  # known again only once this transaction has committed
    try:
        texts = [(p.at, p.actor, p.action, p.text) for p in batch]
        moved = None
        if head is not None and store.engine.dialect.name == "postgresql":
            # One statement, its own transaction (it writes every entry or none): no BEGIN and
            # COMMIT round trips, a third of an append's time.
            with store.write(audit_only=True, one_statement=True) as conn:
                moved = _append_after(conn, head, texts)
        if moved is None:
            with store.write(audit_only=True) as tx:
                moved = _append_read(tx, texts)
        group.head = moved
        for offset, pending in enumerate(batch, start=1):
            pending.seq = moved[0] - len(batch) + offset
    except BaseException as error:  # every entry of the failed transaction fails with it
        for pending in batch:
            pending.error = error
    finally:
        with group.lock:
            if group.queue:
                group.queue[0].wake.set()  # not done: it leads the next transaction
            else:
                group.leading = False
        for pending in batch:
            pending.wake.set()


def verify_store(store: Store) -> list[str]:
    """Every inconsistency in the store's chain, in order (:func:`verify`)."""
    with store.engine.connect() as conn:
        return verify(conn)


def read_entries(store: Store, action: str | None = None) -> list[AuditEntry]:
    """The store's entries, oldest first (of ``action`` only, if given)."""
    with store.engine.connect() as conn:
        return list(entries(conn, action=action))
