"""Seals on what the disclosure decision reads, under a key that is not in the database.

An insider who can write the node's database (the SQLite file, or the PostgreSQL
tables) but not the node host's key files must not be able to widen a disclosure
or rewrite history unnoticed (docs/design.md "Decide from what is signed"). So:

1. the node's **integrity key** (32 random bytes, ``<pki_dir>/<AGENCY>/integrity.key``,
   mode 0600, written by ``exchange pki init`` or ``exchange pki integrity-key``) never
   enters the database;
2. every column the decision or its SQL prefilters read is bound by an HMAC-SHA256
   under that key, written with the row: a ``log`` row (identity, version, payload
   type, signing key id, audience, its own marking, content hash) and a ``records``
   row (identity, version, the log entry it points at, status, kind, marking). A
   stored envelope is tied to its sealed log row by its content hash (SHA-256 of the
   payload, which the originator's signature covers);
3. every read that can disclose checks the seal before the decision sees the row;
   a row whose seal does not match is never served (to the caller it is not there),
   and is reported once as a security event (:class:`Reporter`), and by
   ``exchange audit verify`` (:mod:`exchange.store.sealcheck`);
4. the audit chain is keyed (entry n's hash is an HMAC of entry n-1's and its own
   fields), and its head is anchored in a file beside the key after each commit, so a
   rewritten or truncated tail is detected too (:mod:`exchange.store.audit`);
5. ``disclosure_index`` rows are sealed and checked against the pull entries of the
   audit chain they are derived from.

The seal reaches the code that writes rows through the connection's execution
options (:func:`of`), so a write path needs no extra parameter: a connection of a
store always carries its node's :class:`Integrity`, and one without it raises.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import operator
import os
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.exc import SQLAlchemyError

from exchange.errors import ConfigError
from exchange.store.schema import security_events
from exchange.v1 import records_pb2

__all__ = ["KEY_BYTES", "Integrity", "Reporter", "anchor_path", "for_node", "key_path", "load_key", "make_key", "of"]

log = logging.getLogger("exchange.store")

KEY_BYTES = 32
OPTION = "exchange_integrity"  # the execution option that carries a store's Integrity
MAX_REPORTED = 1000  # records reported individually per process; beyond, one summary event

# Rows of ``select_current`` that passed ``current_problem``, remembered by every value the
# check reads (at most this many, the oldest forgotten first). A record shown again (a popular
# one is on many pages) is then checked by comparing it with the row that passed, value for
# value, instead of computing two HMACs and a SHA-256 again: a third of a first page's time at
# 1,000,000 records. Equal inputs give the same answer, so this is the check itself, only
# remembered (as signature caches are); a row edited in any checked byte is not found here and
# is checked afresh. About 1.5 KB an entry (the envelope is most of it).
PASSED_ROWS = 10_000

# The values of a ``select_current`` row that ``current_problem`` reads, as one tuple: its check
# (``_current_problem``) takes this tuple and nothing else, so what is remembered is what it read.
CURRENT_CHECKED = (
    "originator", "record_id", "version", "seq", "status", "kind", "classification", "releasable_to", "tlp",
    "caveats", "mac", "log_payload_type", "log_key_id", "log_audience", "log_classification",
    "log_releasable_to", "log_tlp", "log_caveats", "log_content_hash", "received_from", "received_at", "log_mac",
    "envelope",
)
_current_checked = operator.attrgetter(*CURRENT_CHECKED)
# The values of a ``log_after`` row that ``entry_problem`` reads, in the order it takes them.
ENTRY_CHECKED = (
    "seq", "originator", "record_id", "version", "payload_type", "key_id", "audience", "v_classification",
    "v_releasable_to", "v_tlp", "v_caveats", "content_hash", "received_from", "received_at", "mac", "classification",
    "r_version", "r_seq", "r_status", "r_kind", "releasable_to", "tlp", "caveats", "r_mac", "purged", "envelope",
)
_entry_checked = operator.attrgetter(*ENTRY_CHECKED)


def key_path(pki_dir: Path, agency: str) -> Path:
    return pki_dir / agency / "integrity.key"


def anchor_path(pki_dir: Path, agency: str, database_url: str) -> Path:
    """Where the audit head of this database is anchored: beside the key (out of a database
    writer's reach), one file per database, so two databases of one agency never mix."""
    name = hashlib.sha256(database_url.encode("utf-8")).hexdigest()[:16]
    return pki_dir / agency / f"audit-head-{name}"


def make_key(path: Path) -> None:
    """Write a new integrity key (0600); an existing one is never replaced (every seal and
    the audit chain depend on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists: a node's integrity key is never replaced") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(KEY_BYTES))


def load_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no integrity key at {path}: make one with `exchange pki integrity-key --config "
                          "node.toml` (kept beside the node's private keys, never in the database)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read integrity key {path}: {exc.strerror}") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: an integrity key is {KEY_BYTES} bytes, not {len(key)}")
    return key


def for_node(pki_dir: Path, agency: str, database_url: str) -> Integrity:
    """The Integrity of a node: its key, and the anchor of its database's audit head."""
    return Integrity(load_key(key_path(pki_dir, agency)), anchor=anchor_path(pki_dir, agency, database_url))


_LENGTH = struct.Struct(">I").pack


def _encode(tag: bytes, fields: tuple[Any, ...]) -> bytes:
    """Length-prefixed fields after a tag per kind of row, so no two rows encode alike.
    (Every row written or served is sealed or checked: this is kept lean.)"""
    parts = [tag]
    for value in fields:
        kind = value.__class__
        data = value if kind is bytes else value.encode() if kind is str else str(value).encode()
        parts += (_LENGTH(len(data)), data)
    return b"".join(parts)


_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _Hmac:
    """HMAC-SHA256 under one key, its padded key hashed once (RFC 2104): a seal then costs two
    copies and two short hashes, a third of ``hmac.digest``, which sets the key up on every
    call. Every row a pull writes or serves is sealed or checked (``Integrity``)."""

    def __init__(self, key: bytes) -> None:
        padded = key.ljust(_SHA256_BLOCK, b"\x00")  # an integrity key (KEY_BYTES) is shorter than a block
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        # The two keyed states are never updated, only copied: safe on any thread.
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Integrity:
    """One node's seals: computes and checks them, keys the audit chain, anchors its head."""

    def __init__(self, key: bytes, *, anchor: Path | None = None) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(f"an integrity key is {KEY_BYTES} bytes, not {len(key)}")
        self._hmac = _Hmac(key)
        self.anchor = anchor
        self.reporter: Reporter | None = None
        self._pending = threading.local()  # the audit head this thread's open transaction wrote
        self._anchor_lock = threading.Lock()
        # The head this process last anchored (or found anchored at start): a new head is
        # anchored only if the chain still holds this one (audit.append checks), so a cut
        # or rewritten chain never gets a fresh anchor that would hide it.
        self.last_anchored = self.anchored()
        self._broken_logged = False
        # Rows that passed current_problem (PASSED_ROWS). An OrderedDict forgets its oldest in
        # O(1); a dict's first key, after many deletions from its front, is found by a scan.
        self._passed: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._passed_lock = threading.Lock()

    def _mac(self, tag: bytes, fields: tuple[Any, ...]) -> bytes:
        return self._hmac.digest(_encode(tag, fields))

    # --- the seals ----------------------------------------------------------------------------

    def log_mac(self, seq: int, originator: str, record_id: str, version: int, payload_type: str, key_id: str,
                audience: str, classification: str, releasable_to: str, tlp: str, caveats: str,
                content_hash: bytes, received_from: str, received_at: int) -> bytes:
        """A log entry's seal. Its receipt (the partner it came from, when) is covered since
        revision 0017: what a user is shown as a record's provenance, what TAXII dates an
        entry by, and what tells this node's own entries from a partner's when it re-signs
        them (exchange/store/resign.py)."""
        return self._mac(b"log\x00", (seq, originator, record_id, version, payload_type, key_id, audience,
                                      classification, releasable_to, tlp, caveats, bytes(content_hash),
                                      received_from, int(received_at)))

    def log_mac_before_0017(self, seq: int, originator: str, record_id: str, version: int, payload_type: str,
                            key_id: str, audience: str, classification: str, releasable_to: str, tlp: str,
                            caveats: str, content_hash: bytes) -> bytes:
        """A log entry's seal as revisions 0003 to 0016 made it (no receipt): only for the
        upgrade to 0017, which checks each entry's seal under it before sealing it anew."""
        return self._mac(b"log\x00", (seq, originator, record_id, version, payload_type, key_id, audience,
                                      classification, releasable_to, tlp, caveats, bytes(content_hash)))

    def log_mac_of(self, seq: int, values: dict[str, Any]) -> bytes:
        """The seal of a log row given as its column values (``rows.log_values``)."""
        return self.log_mac(seq, *(values[c] for c in LOG_SEALED))

    def records_mac(self, originator: str, record_id: str, version: int, seq: int, status: str, kind: str,
                    classification: str, releasable_to: str, tlp: str, caveats: str) -> bytes:
        return self._mac(b"records\x00", (originator, record_id, version, seq, status, kind, classification,
                                          releasable_to, tlp, caveats))

    def records_mac_of(self, originator: str, record_id: str, values: dict[str, Any]) -> bytes:
        """The seal of a current-version row given as its column values (``rows.current_values``)."""
        return self.records_mac(originator, record_id, *(values[c] for c in RECORDS_SEALED))

    def draft_mac(self, draft_id: str, originator: str, record_id: str, base_version: int, author: str,
                  reference: str, draft: bytes, approvals_needed: int) -> bytes:
        """A draft held for release review: what an approval releases is what the analyst submitted
        (an insider editing the row cannot change what officers approved, nor lower the count)."""
        return self._mac(b"draft\x00", (draft_id, originator, record_id, base_version, author, reference,
                                         bytes(draft), approvals_needed))

    def approval_mac(self, draft_id: str, officer: str, at: int) -> bytes:
        """One officer's approval of a draft: a row planted in the database counts for nothing."""
        return self._mac(b"approval\x00", (draft_id, officer, at))

    def disclosure_mac(self, originator: str, record_id: str, audit_seq: int, version: int, withdrawal: bool,
                       partner: str) -> bytes:
        return self._mac(b"disclosure\x00", (originator, record_id, audit_seq, version, int(bool(withdrawal)),
                                             partner))

    def disclosure_problem(self, originator: str, record_id: str, audit_seq: int, version: int, withdrawal: bool,
                           partner: str, mac: bytes | None) -> str | None:
        expected = self.disclosure_mac(originator, record_id, audit_seq, version, withdrawal, partner)
        if mac is None or not hmac.compare_digest(expected, bytes(mac)):
            return f"its disclosure_index row of audit entry {audit_seq} does not match its seal"
        return None

    def chain(self, prev_hash: bytes, body: bytes) -> bytes:
        """An audit entry's hash: keyed, so a rewritten tail cannot be re-hashed without the key."""
        return self._hmac.digest(b"audit\x00" + prev_hash + body)

    # --- checks on the read paths -------------------------------------------------------------

    def current_problem(self, row: Any) -> str | None:
        """What is wrong with a row of ``Store.select_current`` (None: sealed as written).

        A row equal in every value it reads to one that passed before passes (``PASSED_ROWS``)."""
        return self.current_checked_problem(_current_checked(row))

    def current_checked_problem(self, key: tuple[Any, ...]) -> str | None:
        """``current_problem`` of a row's ``CURRENT_CHECKED`` values, in that order (a caller
        reading many rows takes them by position: ``rows.by_position``)."""
        try:
            if key in self._passed:
                return None
        except TypeError:  # a value that is not hashable (a driver's memoryview): checked, not remembered
            return self._current_problem(key)
        problem = self._current_problem(key)
        if problem is None:
            with self._passed_lock:
                self._passed[key] = None
                while len(self._passed) > PASSED_ROWS:
                    self._passed.popitem(last=False)  # the oldest first
        return problem

    def _current_problem(self, values: tuple[Any, ...]) -> str | None:
        """``current_problem`` of a row's ``_current_checked`` values: the check reads nothing
        else, so the values it remembers are all it depends on."""
        (originator, record_id, version, seq, status, kind, classification, releasable_to, tlp, caveats, mac,
         log_payload_type, log_key_id, log_audience, log_classification, log_releasable_to, log_tlp, log_caveats,
         log_content_hash, received_from, received_at, log_mac, envelope) = values
        expected = self.records_mac(originator, record_id, version, seq, status, kind, classification, releasable_to,
                                    tlp, caveats)
        if mac is None or not hmac.compare_digest(expected, bytes(mac)):
            return "its current-version row (records) does not match its seal"
        # The envelope served is the log entry's at records.seq: that entry must be this
        # record's sealed version, and the envelope its payload.
        expected = self.log_mac(seq, originator, record_id, version, log_payload_type, log_key_id, log_audience,
                                log_classification, log_releasable_to, log_tlp, log_caveats, log_content_hash,
                                received_from, received_at)
        if log_mac is None or not hmac.compare_digest(expected, bytes(log_mac)):
            return f"its log entry {seq} does not match its seal"
        return self._envelope_problem(seq, envelope, log_content_hash, log_key_id, log_payload_type)

    def entry_problem(self, row: Any) -> str | None:
        """What is wrong with a row of ``Store.log_after`` (None: sealed as written)."""
        return self.entry_checked_problem(_entry_checked(row))

    def entry_checked_problem(self, values: tuple[Any, ...]) -> str | None:
        """``entry_problem`` of a row's ``ENTRY_CHECKED`` values, in that order (``log_after``
        reads them by position: ``rows.by_position``)."""
        (seq, originator, record_id, version, payload_type, key_id, audience, v_classification, v_releasable_to,
         v_tlp, v_caveats, content_hash, received_from, received_at, mac, classification, r_version, r_seq, r_status,
         r_kind, releasable_to, tlp, caveats, r_mac, purged, envelope) = values
        expected = self.log_mac(seq, originator, record_id, version, payload_type, key_id, audience, v_classification,
                                v_releasable_to, v_tlp, v_caveats, content_hash, received_from, received_at)
        if mac is None or not hmac.compare_digest(expected, bytes(mac)):
            return f"its log entry {seq} does not match its seal"
        if classification is not None:  # the current version's marking, joined from records
            expected = self.records_mac(originator, record_id, r_version, r_seq, r_status, r_kind, classification,
                                        releasable_to, tlp, caveats)
            if r_mac is None or not hmac.compare_digest(expected, bytes(r_mac)):
                return "its current-version row (records) does not match its seal"
        if purged:
            return None  # nothing left to serve (its envelope is gone)
        return self._envelope_problem(seq, envelope, content_hash, key_id, payload_type)

    def log_row_problem(self, row: Any) -> str | None:
        """What is wrong with a bare ``log`` row (its own columns: seq, ``LOG_SEALED``, mac)."""
        expected = self.log_mac(row.seq, *(getattr(row, name) for name in LOG_SEALED))
        if row.mac is None or not hmac.compare_digest(expected, bytes(row.mac)):
            return f"its log entry {row.seq} does not match its seal"
        return None

    @staticmethod
    def _envelope_problem(seq: int, envelope: bytes, content_hash: bytes, key_id: str,
                          payload_type: str) -> str | None:
        """The envelope served must be the one the sealed columns describe: its payload hashes
        to the sealed content hash, and it names the sealed signing key and payload type (the
        columns the decision and the distrust of a compromised key read). Another envelope of
        the same payload, signed with another key, is not the one sealed."""
        try:
            parsed = records_pb2.Envelope.FromString(bytes(envelope))
            if (hmac.compare_digest(hashlib.sha256(parsed.payload).digest(), bytes(content_hash))
                    and parsed.key_id == key_id and parsed.payload_type == payload_type):
                return None
        except Exception:  # protobuf's DecodeError: not an envelope at all
            pass
        return f"the envelope stored at log entry {seq} is not the one sealed"

    def served(self, originator: str, record_id: str, problem: str | None) -> bool:
        """True if a checked row may go on to the decision; otherwise it is reported (once)."""
        if problem is None:
            return True
        if self.reporter is not None:
            self.reporter.report(originator, record_id, problem)
        return False

    def served_in(self, tx: Connection, originator: str, record_id: str, problem: str | None) -> bool:
        """``served`` for a check inside a write transaction: the event is written in ``tx``
        (a second writer would wait on the one this transaction holds)."""
        if problem is None:
            return True
        if self.reporter is not None:
            self.reporter.report(originator, record_id, problem, tx=tx)
        return False

    # --- the audit head's anchor --------------------------------------------------------------

    def written_head(self, seq: int, digest: bytes) -> None:
        """Called by ``audit.append`` inside the transaction: anchor it once committed."""
        self._pending.head = (seq, digest)

    @contextmanager
    def anchoring(self) -> Iterator[None]:
        """Around a write transaction: after its commit, anchor the audit head it wrote."""
        depth = getattr(self._pending, "depth", 0)
        self._pending.depth = depth + 1
        if depth == 0:
            self._pending.head = None
        try:
            yield
        except BaseException:
            self._pending.head = None  # rolled back: nothing to anchor
            raise
        finally:
            self._pending.depth = depth
        head = self._pending.head
        if depth == 0 and head is not None:
            self._pending.head = None
            self._anchor(*head)
        if depth == 0 and getattr(self._pending, "broken", False):
            self._pending.broken = False
            if self.reporter is not None:
                self.reporter.report("", "", "the audit chain no longer holds its anchored head")

    def _anchor(self, seq: int, digest: bytes) -> None:
        """Overwrite the anchor's fixed-size record in place, without fsync.

        Written after the commit, so it can only ever be behind the chain, never ahead of
        it: a crash that loses this write (no fsync) leaves an older head, which verify
        accepts (the chain still reaches it). An fsync per search would cost a disk flush
        on every read; what it would buy is detection of a truncation of the last few
        entries written just before a crash, which the in-database head still covers
        against anyone without the key.
        """
        if self.anchor is None:
            return
        with self._anchor_lock:
            if self.last_anchored is not None and seq <= self.last_anchored[0]:
                return  # another thread's later commit got here first: never move back
            record = ANCHOR_MAGIC + seq.to_bytes(8, "big") + digest
            fd = os.open(self.anchor, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, record, 0)
            finally:
                os.close(fd)
            self.last_anchored = (seq, digest)

    def anchor_broken(self) -> None:
        """The chain no longer holds the anchored head: the anchor stays as evidence (never
        moved again by this process); the first time, one security event after the commit."""
        with self._anchor_lock:
            first, self._broken_logged = not self._broken_logged, True
        if first:
            self._pending.broken = True

    def anchored(self) -> tuple[int, bytes] | None:
        """The anchored audit head (seq, hash), or None if this database was never anchored."""
        if self.anchor is None:
            return None
        try:
            record = self.anchor.read_bytes()
        except FileNotFoundError:
            return None
        if len(record) != len(ANCHOR_MAGIC) + 40 or not record.startswith(ANCHOR_MAGIC):
            raise ConfigError(f"{self.anchor} is not an audit anchor")
        return int.from_bytes(record[8:16], "big"), record[16:]


ANCHOR_MAGIC = b"EXAUDIT1"

# The columns of a log row and of a current-version row that their seals cover, after
# seq (log) and after originator and record_id (records), in the order the MACs take them.
LOG_SEALED = ("originator", "record_id", "version", "payload_type", "key_id", "audience", "classification",
              "releasable_to", "tlp", "caveats", "content_hash", "received_from", "received_at")
RECORDS_SEALED = ("version", "seq", "status", "kind", "classification", "releasable_to", "tlp", "caveats")


def of(conn: Connection) -> Integrity:
    """The Integrity of the store a connection belongs to (every store's connections carry it)."""
    found = conn.get_execution_options().get(OPTION)
    if not isinstance(found, Integrity):
        raise RuntimeError("a connection without the node's integrity key cannot write sealed rows")
    return found


class Reporter:
    """Security events for rows whose seal does not match: one per record and problem per
    process, at most MAX_REPORTED of them, then one saying the rest go unreported."""

    def __init__(self, write: Callable[[], AbstractContextManager[Connection]], agency: str) -> None:
        self._write = write
        self._agency = agency
        self._seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def report(self, originator: str, record_id: str, problem: str, *, tx: Connection | None = None) -> None:
        key = (originator[:32], record_id[:36], problem)
        with self._lock:
            if key in self._seen or len(self._seen) > MAX_REPORTED:
                return
            self._seen.add(key)
            overflow = len(self._seen) > MAX_REPORTED
        detail: dict[str, Any] = (
            {"problem": f"over {MAX_REPORTED} records failed their seal; the rest are not reported one by one"}
            if overflow else {"originator": key[0], "record_id": key[1], "problem": problem} if key[0]
            else {"problem": problem}
        )
        log.error("integrity: %s", " ".join(f"{k}={v}" for k, v in sorted(detail.items())))
        event = insert(security_events).values(
            at=time.time_ns() // 1000, kind="integrity", peer=self._agency,
            detail=json.dumps(detail, ensure_ascii=False, sort_keys=True))
        if tx is not None:
            tx.execute(event)  # committed with the caller's transaction
            return
        try:
            with self._write() as conn:
                conn.execute(event)
        except SQLAlchemyError as error:
            # The read that found the problem has already left the row out; the log line above
            # is the alert if the event cannot be written (a database that refuses writes).
            log.error("integrity: could not record the security event (%s)", type(error).__name__)
