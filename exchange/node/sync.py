"""Sync service, serving side: partner nodes pull what the decision releases to them.

The cursor is opaque to the puller: it is sealed by this node and holds the
log's epoch, the last *scanned* sequence number and a fingerprint of that
entry, so its movement says nothing about entries the puller cannot see, and
a cursor from before the log went backwards (a restored backup) is recognised
and refused with FAILED_PRECONDITION.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

from exchange.config import Limits
from exchange.core.identity import Principal
from exchange.core.manifest import Manifest
from exchange.core.policy import decide_entry
from exchange.core.trust import Trust
from exchange.errors import InvalidInput, ManifestBehind, ManifestChanged, StaleCursor
from exchange.node.rpc import Method
from exchange.node.tokens import Sealer
from exchange.records import digest as digests
from exchange.store import Store, watch
from exchange.store.log import LogEntry, log_after, log_end, log_fingerprint
from exchange.store.manifests import MAX_SERVED_VERSIONS, stored_manifests
from exchange.v1 import sync_pb2

_CURSOR = ">16sq8s"  # epoch, last scanned seq, first 8 bytes of that entry's content hash


@dataclass
class SyncService:
    agency: str
    store: Store
    trust: Trust  # read at every call: the manifest may be replaced while the node runs
    limits: Limits

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def __post_init__(self) -> None:
        # Set by the node: a partner says it trusts a newer manifest version (agency, version).
        self.newer_elsewhere: Callable[[str, int], None] | None = None
        self._sealer = Sealer(self.store.token_key(), b"exchange pull cursor v1")
        self._epoch = self.store.log_epoch()

    def methods(self) -> list[Method]:
        return [
            Method("Pull", sync_pb2.PullRequest, self.pull, streaming=True),
            Method("Digest", sync_pb2.DigestRequest, self.digest),
            Method("GetManifest", sync_pb2.GetManifestRequest, self.get_manifest),
        ]

    # --- the manifest ---------------------------------------------------------------------

    def get_manifest(self, request: sync_pb2.GetManifestRequest, caller: Principal) -> sync_pb2.GetManifestResponse:
        """The signed versions this node trusts above the caller's, oldest first (bounded)."""
        kept = stored_manifests(self.store, after=request.have_version, limit=MAX_SERVED_VERSIONS)
        return sync_pb2.GetManifestResponse(documents=[k.document for k in kept],
                                            current_version=self.manifest.version)

    def _require_current_manifest(self, request: sync_pb2.PullRequest, caller: Principal) -> None:
        """A puller on an older manifest is served nothing until it adopts ours: it would
        decide what to hold by partners, accreditations and keys that no longer hold. Only
        when we hold our version's signed document (it can fetch it); 0: not said. A puller
        on a newer one is served, and told to ``newer_elsewhere`` (the node fetches it from
        the puller), so a manifest spreads against the direction of pulls too."""
        theirs, ours = request.manifest_version, self.manifest.version
        if theirs > ours and self.newer_elsewhere is not None:
            self.newer_elsewhere(caller.agency, theirs)
        if theirs and theirs < ours and stored_manifests(self.store, after=ours - 1, limit=1):
            raise ManifestBehind(f"newer manifest: version {ours} is trusted here, the puller's is {theirs}; "
                                 "fetch it with GetManifest, then pull again")

    def _released(
        self, request: sync_pb2.DigestRequest, caller: Principal, prefix: str, end: int,
    ) -> Iterator[tuple[str, str, int, bytes]]:
        """What the digest describes: the entries up to ``end`` released to the caller.

        A listing over ``max_digest_entries`` is refused as soon as the count passes it,
        not after the whole bucket has been read.
        """
        listed = 0
        for entry in log_after(self.store, 0, upto=end, originator=request.originator or None, id_prefix=prefix,
                               audience_of=caller.agency):
            if not self._releasable(entry, caller):
                continue
            listed += 1
            if request.list_entries and listed > self.limits.max_digest_entries:
                _over_listing(self.limits.max_digest_entries)
            yield (entry.originator, entry.record_id, entry.version, entry.content_hash)

    def _releasable(self, entry: LogEntry, caller: Principal) -> bool:
        return decide_entry(holder=self.agency, principal=caller, entry=entry,
                            known_agencies=self.manifest.agencies).allowed

    def _releasable_cached(
        self, entry: LogEntry, caller: Principal, decided: dict[tuple[object, ...], bool]
    ) -> bool:
        """``_releasable`` for one call: the decision is a function of the entry's originator,
        markings (or a withdrawal's audience) for a fixed caller, so each combination is
        decided once per call (markings repeat across a log)."""
        key: tuple[object, ...] = (
            (True, entry.audience) if entry.is_withdrawal
            else (False, entry.originator, entry.current_marking, entry.version_marking)
        )
        found = decided.get(key)
        if found is None:
            if len(decided) > 10_000:
                decided.clear()
            found = decided[key] = self._releasable(entry, caller)
        return found

    # --- cursors ----------------------------------------------------------------------------

    def _cursor(self, caller: Principal, seq: int, fingerprint: bytes) -> bytes:
        plain = struct.pack(_CURSOR, self._epoch, seq, fingerprint)
        return self._sealer.seal(plain, caller.identity.uri.encode())

    def _position(self, cursor: bytes, caller: Principal) -> int:
        if not cursor:
            return 0
        plain = self._sealer.open(cursor, caller.identity.uri.encode())
        if plain is None or len(plain) != struct.calcsize(_CURSOR):
            raise InvalidInput("cursor", "not a cursor issued by this node to this partner")
        epoch, seq, fingerprint = struct.unpack(_CURSOR, plain)
        if epoch != self._epoch or (log_fingerprint(self.store, seq) or b"\x00" * 8) != fingerprint:
            raise StaleCursor("cursor refers to log entries this node no longer has; repair with a digest")
        return int(seq)

    # --- Pull -------------------------------------------------------------------------------

    def pull(self, request: sync_pb2.PullRequest, caller: Principal) -> Iterator[bytes]:
        """Serialised ``PullResponse`` messages (``rpc`` passes bytes through as they are)."""
        self._require_current_manifest(request, caller)
        # The caller's accreditation (in ``caller``), the agencies and the keys the decisions
        # below read are this manifest's: a stream never outlives it (``_serving_under``).
        manifest = self.manifest
        after = self._position(request.cursor, caller)
        if len(request.only) > self.limits.max_digest_entries:
            raise InvalidInput("only", f"at most {self.limits.max_digest_entries} buckets")
        buckets = Buckets([(b.originator, _prefix(b.bucket_prefix, f"only[{i}].bucket_prefix"))
                           for i, b in enumerate(request.only)])
        limit = min(request.max_entries or self.limits.pull_batch_entries, self.limits.pull_batch_entries)
        budget = self.limits.max_message_bytes // 2  # leave room for framing and the cursor
        batch: list[LogEntry] = []
        size = 0
        # Everything up to ``end`` is covered by this pull: released entries are sent,
        # the rest skipped (most of them already in SQL), so the final cursor is ``end``.
        end = log_end(self.store)
        if end <= after:
            self._serving_under(manifest, request, caller)
            if not request.cursor:
                # An empty log still gives a cursor: the partner's next pulls resume from it
                # instead of counting as pulls from an empty cursor (rate-limited per partner).
                yield self._batch([], caller, end)
            return
        last = after
        decided: dict[tuple[object, ...], bool] = {}
        for entry in log_after(self.store, after, upto=end, audience_of=caller.agency):
            if buckets.wanted(entry) and self._releasable_cached(entry, caller, decided):
                if batch and (len(batch) >= limit or size + len(entry.envelope) > budget):
                    self._serving_under(manifest, request, caller)
                    yield self._batch(batch, caller, last)
                    batch, size = [], 0
                batch.append(entry)
                size += len(entry.envelope)
            last = entry.seq
        # Sent even when empty, so the caller's cursor moves past entries it cannot
        # see and they are not scanned again on its next pull.
        self._serving_under(manifest, request, caller)
        yield self._batch(batch, caller, end)

    def _serving_under(self, manifest: Manifest, request: sync_pb2.PullRequest, caller: Principal) -> None:
        """Before a batch is audited and sent: the manifest its decisions were made under must
        still be the one trusted. The admission's recheck (exchange/node/auth.py) ends any stream
        whose caller is now another principal (revoked, removed, re-accredited); this also
        covers what else the decisions of this call read from the manifest and cached (the
        federation's agencies). A puller that states an older version is told to catch up, as
        at the start of a call; any other is told to pull again."""
        if self.manifest is manifest:
            return
        self._require_current_manifest(request, caller)
        raise ManifestChanged(f"manifest changed: version {self.manifest.version} was adopted during this pull "
                              f"(it began under version {manifest.version}); pull again from the last cursor")

    def _batch(self, batch: list[LogEntry], caller: Principal, upto: int) -> bytes:
        """One ``PullResponse``, serialised: the stored envelopes go out verbatim (the bytes
        their originator's signature covers were never re-encoded, and are not now)."""
        fingerprint = log_fingerprint(self.store, upto) or b"\x00" * 8
        if batch:
            # A disclosure (docs/design.md "Audit"): one audit entry per batch, written before the
            # batch is handed to gRPC, so a batch is never sent unaudited (if the partner
            # drops the stream, the log may list a batch it never read, never the reverse).
            watch.audit_pull(
                self.store, actor=caller.identity.uri, partner=caller.agency,
                sent=[(e.originator, e.record_id, e.version) for e in batch if not e.is_withdrawal],
                withdrawals=[(e.originator, e.record_id, e.version) for e in batch if e.is_withdrawal],
            )
        return encode_pull_batch([entry.envelope for entry in batch], self._cursor(caller, upto, fingerprint))

    # --- Digest -----------------------------------------------------------------------------

    def digest(self, request: sync_pb2.DigestRequest, caller: Principal) -> sync_pb2.DigestResponse:
        prefix = _prefix(request.bucket_prefix, "bucket_prefix")
        if request.list_entries and not request.originator:
            raise InvalidInput("list_entries", "name the originator whose bucket to list")
        end = log_end(self.store)  # the digest describes the log up to here
        fingerprint = log_fingerprint(self.store, end) or b"\x00" * 8
        groups = digests.group(self._released(request, caller, prefix, end), prefix=prefix,
                               by_bucket=bool(request.originator))
        listed: list[sync_pb2.DigestEntry] = []
        if request.list_entries:
            items = [item for group in groups.values() for item in group]
            if len(items) > self.limits.max_digest_entries:
                _over_listing(self.limits.max_digest_entries)
            listed = [sync_pb2.DigestEntry(originator=o, record_id=r, version=v, content_hash=h)
                      for o, r, v, h in sorted(items)]
        return sync_pb2.DigestResponse(
            entries=listed,
            summaries=[
                sync_pb2.DigestSummary(
                    originator=originator, bucket_prefix=bucket, count=len(items), hash=digests.summary_hash(items)
                )
                for (originator, bucket), items in sorted(groups.items())
            ],
            cursor=self._cursor(caller, end, fingerprint),
        )


def _over_listing(cap: int) -> NoReturn:
    """A listing is at most ``cap`` entries: what a puller accepts (exchange.sync.repair)."""
    raise InvalidInput("bucket_prefix", f"bucket holds over {cap} entries; bisect further")


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field: key, length (varint), bytes."""
    length = len(value)
    head = bytearray([number << 3 | 2])
    while length > 0x7F:
        head.append(length & 0x7F | 0x80)
        length >>= 7
    head.append(length)
    return bytes(head) + value


def encode_pull_batch(envelopes: list[bytes], cursor: bytes) -> bytes:
    """``PullResponse(entries=envelopes, cursor=cursor).SerializeToString()``, with each stored
    envelope's bytes copied as they are instead of parsed and encoded again."""
    parts = [_field(1, envelope) for envelope in envelopes]  # repeated Envelope entries = 1
    if cursor:
        parts.append(_field(2, cursor))  # bytes cursor = 2 (proto3: empty is not sent)
    return b"".join(parts)


def _prefix(value: str, field: str) -> str:
    prefix = value.lower()
    if len(prefix) > 36 or any(c not in "0123456789abcdef-" for c in prefix):
        raise InvalidInput(field, "expected a prefix of a record id (hex digits and hyphens)")
    return prefix


class Buckets:
    """Which entries a repair pull asked for: whole record ids by set, prefixes by scan."""

    def __init__(self, buckets: list[tuple[str, str]]) -> None:
        self._all = not buckets
        self._ids = {(o, p) for o, p in buckets if len(p) == 36}
        self._prefixes = [(o, p) for o, p in buckets if len(p) < 36]

    def wanted(self, entry: LogEntry) -> bool:
        if self._all or (entry.originator, entry.record_id) in self._ids:
            return True
        return any(entry.originator == o and entry.record_id.startswith(p) for o, p in self._prefixes)
