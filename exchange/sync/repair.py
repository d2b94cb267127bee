"""Repair by digest: find what differs by bisection, pull only those buckets.

Used when a cursor is refused as stale (the partner's log went backwards, a
cursor was lost) and after a manifest change. The partner's digest comes with
a cursor at the log position it describes; once the differing buckets are
pulled, normal pulls resume from that cursor, so nothing is pulled twice
except inside the buckets that differed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import grpc

from exchange.config import Limits
from exchange.core.identity import Identity, Principal, Role
from exchange.core.manifest import Manifest
from exchange.core.policy import decide_entry
from exchange.errors import InvalidInput, RefusedError
from exchange.records import digest as digests
from exchange.records.validate import validate_record_id
from exchange.store import Store
from exchange.store.log import log_after
from exchange.store.received import apply_batch
from exchange.sync.report import Progress, PullReport
from exchange.v1 import sync_pb2, sync_pb2_grpc


class RepairError(RefusedError):
    """A peer's digests cannot be used to repair (malformed, or never narrowing down)."""


class Puller(Protocol):
    """What a repair uses of ``exchange.sync.puller.Puller``, which calls it."""

    agency: str
    store: Store
    limits: Limits

    @property
    def manifest(self) -> Manifest: ...  # the manifest trusted now

    def stub(self, peer: str) -> sync_pb2_grpc.SyncServiceStub: ...

    def stream(
        self, peer: str, request: sync_pb2.PullRequest, report: PullReport, progress: Progress | None,
        *, save_cursor: bool,
    ) -> None: ...


LEAF_COUNT = 256  # a differing bucket this small is listed entry by entry instead of split further
MAX_PREFIX = 6  # hex digits


def local_digest(puller: Puller, peer: str, originator: str = "", prefix: str = "") -> dict[tuple[str, str], bytes]:
    """What we hold that ``peer`` would release to us, summarised like its Digest."""
    me = Principal(Identity(puller.agency, None), Role.NODE, puller.manifest.partner(puller.agency).accreditation)
    # The server's own rule (exchange.node.sync), asked with the peer as the holder.
    releasable = (
        (entry.originator, entry.record_id, entry.version, entry.content_hash)
        for entry in log_after(puller.store, 0, originator=originator or None, id_prefix=prefix)
        if decide_entry(holder=peer, principal=me, entry=entry, known_agencies=puller.manifest.agencies).allowed
    )
    groups = digests.group(releasable, prefix=prefix, by_bucket=bool(originator))
    return {key: digests.summary_hash(items) + len(items).to_bytes(8, "big") for key, items in groups.items()}


def _remote(puller: Puller, peer: str, originator: str = "", prefix: str = "") -> sync_pb2.DigestResponse:
    response: sync_pb2.DigestResponse = puller.stub(peer).Digest(
        sync_pb2.DigestRequest(originator=originator, bucket_prefix=prefix),
        timeout=puller.limits.digest_deadline_seconds,
    )
    return response


class _Budget:
    """Digest calls one repair may still make: a peer's digests must not keep us bisecting forever."""

    def __init__(self, peer: str, calls: int) -> None:
        self.peer, self.limit, self.left = peer, calls, calls

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise RepairError(f"{self.peer}'s digests did not narrow down within {self.limit} calls")


def _top_originators(puller: Puller, peer: str, top: sync_pb2.DigestResponse) -> dict[str, bytes]:
    """The top digest's summary per originator, for originators in the manifest only.

    A peer can name any originator; one we don't know can't have signed anything we
    would accept, so it is never bisected (a digest naming invented originators with
    huge counts blew a node's memory up): one security event says how many there were.
    """
    known = puller.manifest.agencies
    found: dict[str, bytes] = {}
    unknown = 0  # summaries naming an originator outside the manifest
    named: list[str] = []  # the first few of those names
    for s in top.summaries:
        if s.originator in known:
            if s.bucket_prefix == "":
                found.setdefault(s.originator, bytes(s.hash) + s.count.to_bytes(8, "big"))
            continue
        unknown += 1
        if len(named) < puller.limits.refusal_hashes_per_event:
            named.append(s.originator[:40])
    if unknown:
        _digest_event(puller, peer, {
            "reason": "digest names originators not in the federation manifest; ignored",
            "count": unknown, "originators": named,
        })
    return found


def _digest_event(puller: Puller, peer: str, detail: dict[str, object]) -> None:
    from exchange.store.events import security_event

    with puller.store.write() as conn:
        security_event(conn, "digest-refused", peer, detail)


def _bisect_summaries(response: sync_pb2.DigestResponse, peer: str, originator: str, prefix: str
                      ) -> Iterator[tuple[str, bytes, int]]:
    """(bucket, summary, count) of one bisection step; a bucket must be ``prefix`` split by one
    more character: anything else is a peer steering us (a bucket equal to its parent would
    recurse without end), and refused at once. At most 17 distinct buckets can pass."""
    seen: set[str] = set()
    for s in response.summaries:
        bucket = s.bucket_prefix
        if s.originator != originator or len(bucket) != len(prefix) + 1 or not bucket.startswith(prefix):
            raise RepairError(f"{peer} answered a digest of {originator}/{prefix!r} with bucket {bucket[:40]!r}")
        if bucket not in seen:
            seen.add(bucket)
            yield bucket, bytes(s.hash) + s.count.to_bytes(8, "big"), s.count


def differing_buckets(puller: Puller, peer: str) -> tuple[Iterator[sync_pb2.Bucket], bytes]:
    """The buckets where the peer's holdings differ from ours (found lazily, as they are
    pulled: memory does not grow with what the peer claims), and the digest's cursor."""
    top = _remote(puller, peer)
    budget = _Budget(peer, puller.limits.max_repair_digest_calls)
    remote = _top_originators(puller, peer, top)
    cursor = bytes(top.cursor)
    del top  # a top digest can be a whole message of invented originators

    def walk() -> Iterator[sync_pb2.Bucket]:
        local = local_digest(puller, peer)
        differing = [o for o, summary in sorted(remote.items()) if local.get((o, "")) != summary]
        del local
        for originator in differing:
            yield from _bisect(puller, peer, originator, "", budget)

    return walk(), cursor


def _bisect(puller: Puller, peer: str, originator: str, prefix: str, budget: _Budget) -> Iterator[sync_pb2.Bucket]:
    budget.spend()
    response = _remote(puller, peer, originator, prefix)
    remote = list(_bisect_summaries(response, peer, originator, prefix))
    del response
    local = local_digest(puller, peer, originator, prefix)
    for bucket, summary, count in remote:
        if local.get((originator, bucket)) == summary:
            continue
        if count <= LEAF_COUNT or len(bucket) >= MAX_PREFIX:
            yield from _missing(puller, peer, originator, bucket, budget)
        else:
            yield from _bisect(puller, peer, originator, bucket, budget)


def _missing(puller: Puller, peer: str, originator: str, bucket: str, budget: _Budget) -> Iterator[sync_pb2.Bucket]:
    """The records of a small differing bucket that the peer has and we lack.

    A listing holds at most ``max_digest_entries`` entries (what a Digest answers,
    exchange.node.sync), each of this originator and bucket with a well-formed record
    id; a peer that lists more or other is refused, not followed.
    """
    budget.spend()
    listing: sync_pb2.DigestResponse = puller.stub(peer).Digest(
        sync_pb2.DigestRequest(originator=originator, bucket_prefix=bucket, list_entries=True),
        timeout=puller.limits.digest_deadline_seconds,
    )
    cap = puller.limits.max_digest_entries
    if len(listing.entries) > cap:
        raise RepairError(f"{peer} listed {len(listing.entries)} entries of {originator}/{bucket}, "
                          f"over the limit of {cap}")
    held = {
        (e.record_id, e.version, e.content_hash)
        for e in log_after(puller.store, 0, originator=originator, id_prefix=bucket, include_purged=True)
    }
    lacking: set[str] = set()
    for e in listing.entries:
        if e.originator != originator or not e.record_id.startswith(bucket) or not _is_record_id(e.record_id):
            raise RepairError(f"{peer} listed {e.originator[:40]}/{e.record_id[:40]!r} in {originator}/{bucket}")
        if (e.record_id, e.version, bytes(e.content_hash)) not in held:
            lacking.add(e.record_id)
    del listing, held
    for record_id in sorted(lacking):
        yield sync_pb2.Bucket(originator=originator, bucket_prefix=record_id)


def _is_record_id(value: str) -> bool:
    try:
        validate_record_id(value, "record_id")
    except InvalidInput:
        return False
    return True


def repair(puller: Puller, peer: str, report: PullReport, *, progress: Progress | None = None) -> None:
    """Reconcile with ``peer`` through digests, then resume from the digest's cursor.

    The differing buckets are pulled as bisection finds them, ``max_digest_entries``
    at a time, so a repair holds one listing and one request's buckets at most.
    """
    try:
        buckets, cursor = differing_buckets(puller, peer)
        step = puller.limits.max_digest_entries
        for chunk in _chunks(buckets, step):
            request = sync_pb2.PullRequest(max_entries=puller.limits.pull_batch_entries, only=chunk)
            puller.stream(peer, request, report, progress, save_cursor=False)
            if report.truncated:
                return  # not all of it came: the flag stays, the next pull repairs again
        # Resume normal pulls from the digest's position; the repair flag is cleared with it.
        apply_batch(puller.store, peer, [], cursor, repaired=True)
        report.repaired = True
    except grpc.RpcError as error:
        report.error = f"repair failed: {error.code().name}: {(error.details() or '')[:200]}"
    except RepairError as error:
        report.error = f"repair failed: {error}"


def _chunks(buckets: Iterator[sync_pb2.Bucket], size: int) -> Iterator[list[sync_pb2.Bucket]]:
    chunk: list[sync_pb2.Bucket] = []
    for bucket in buckets:
        chunk.append(bucket)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
