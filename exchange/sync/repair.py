"""Repair by digest: find what differs by bisection, pull only those buckets.

Used when a cursor is refused as stale (the partner's log went backwards, a
cursor was lost) and after a manifest change. The partner's digest comes with
a cursor at the log position it describes; once the differing buckets are
pulled, normal pulls resume from that cursor, so nothing is pulled twice
except inside the buckets that differed.
"""

from __future__ import annotations

import grpc

from exchange.core.identity import Identity, Principal, Role
from exchange.core.policy import decide_version, withdrawal_releasable
from exchange.errors import RefusedError, clip
from exchange.store.store import LogEntry
from exchange.sync.puller import Progress, Puller, PullReport
from exchange.v1 import sync_pb2


class RepairError(RefusedError):
    """A peer's digests cannot be used to repair (malformed, or never narrowing down)."""


LEAF_COUNT = 256  # a differing bucket this small is listed entry by entry instead of split further
MAX_PREFIX = 6  # hex digits


def local_digest(puller: Puller, peer: str, originator: str = "", prefix: str = "") -> dict[tuple[str, str], bytes]:
    """What we hold that ``peer`` would release to us, summarised like its Digest."""
    from exchange.node.sync import summary_hash

    me = Principal(Identity(puller.agency, None), Role.NODE, puller.manifest.partner(puller.agency).accreditation)
    groups: dict[tuple[str, str], list[tuple[str, str, int, bytes]]] = {}
    for entry in puller.store.log_after(0, originator=originator or None, id_prefix=prefix):
        if not _peer_would_release(puller, peer, me, entry):
            continue
        bucket = entry.record_id[: len(prefix) + 1] if originator else ""
        groups.setdefault((entry.originator, bucket), []).append(
            (entry.originator, entry.record_id, entry.version, entry.content_hash)
        )
    return {key: summary_hash(items) + len(items).to_bytes(8, "big") for key, items in groups.items()}


def _peer_would_release(puller: Puller, peer: str, me: Principal, entry: LogEntry) -> bool:
    if entry.is_withdrawal:
        return withdrawal_releasable(principal=me, audience=entry.audience).allowed
    if entry.current_marking is None or entry.version_marking is None:
        return False
    return decide_version(
        holder=peer, principal=me, originator=entry.originator, current=entry.current_marking,
        version=entry.version_marking,
        known_agencies=puller.manifest.agencies,
    ).allowed


def _remote(puller: Puller, peer: str, originator: str = "", prefix: str = "") -> sync_pb2.DigestResponse:
    response: sync_pb2.DigestResponse = puller.stub(peer).Digest(
        sync_pb2.DigestRequest(originator=originator, bucket_prefix=prefix),
        timeout=puller.limits.digest_deadline_seconds,
    )
    return response


def _summaries(response: sync_pb2.DigestResponse) -> dict[tuple[str, str], tuple[bytes, int]]:
    return {(s.originator, s.bucket_prefix): (bytes(s.hash) + s.count.to_bytes(8, "big"), s.count)
            for s in response.summaries}


def differing_buckets(puller: Puller, peer: str) -> tuple[list[sync_pb2.Bucket], bytes]:
    """The buckets where the peer's holdings differ from ours, and the digest's cursor."""
    top = _remote(puller, peer)
    local = local_digest(puller, peer)
    buckets: list[sync_pb2.Bucket] = []
    budget = [MAX_DIGEST_CALLS]
    for (originator, _), (summary, _count) in _summaries(top).items():
        if local.get((originator, "")) != summary:
            buckets += _bisect(puller, peer, originator, "", budget)
    return buckets, bytes(top.cursor)


MAX_DIGEST_CALLS = 2_000  # per repair: a peer's digests must not keep us bisecting forever


def _bisect(puller: Puller, peer: str, originator: str, prefix: str, budget: list[int]) -> list[sync_pb2.Bucket]:
    budget[0] -= 1
    if budget[0] < 0:
        raise RepairError(f"{peer}'s digests did not narrow down within {MAX_DIGEST_CALLS} calls")
    remote = _summaries(_remote(puller, peer, originator, prefix))
    local = local_digest(puller, peer, originator, prefix)
    found: list[sync_pb2.Bucket] = []
    for (bucket_originator, bucket), (summary, count) in remote.items():
        # A bucket must be this one split by one more character: anything else is a
        # peer steering us (a bucket equal to its parent would recurse without end).
        if bucket_originator != originator or len(bucket) != len(prefix) + 1 or not bucket.startswith(prefix):
            raise RepairError(f"{peer} answered a digest of {clip(originator)}/{prefix!r} with bucket {clip(bucket)!r}")
        if local.get((originator, bucket)) == summary:
            continue
        if count <= LEAF_COUNT or len(bucket) >= MAX_PREFIX:
            found += _missing(puller, peer, originator, bucket)
        else:
            found += _bisect(puller, peer, originator, bucket, budget)
    return found


def _missing(puller: Puller, peer: str, originator: str, bucket: str) -> list[sync_pb2.Bucket]:
    """The records of a small differing bucket that the peer has and we lack."""
    listing: sync_pb2.DigestResponse = puller.stub(peer).Digest(
        sync_pb2.DigestRequest(originator=originator, bucket_prefix=bucket, list_entries=True),
        timeout=puller.limits.digest_deadline_seconds,
    )
    held = {
        (e.record_id, e.version, e.content_hash)
        for e in puller.store.log_after(0, originator=originator, id_prefix=bucket, include_purged=True)
    }
    lacking = sorted({e.record_id for e in listing.entries
                      if (e.record_id, e.version, bytes(e.content_hash)) not in held})
    return [sync_pb2.Bucket(originator=originator, bucket_prefix=record_id) for record_id in lacking]


def repair(puller: Puller, peer: str, report: PullReport, *, progress: Progress | None = None) -> None:
    """Reconcile with ``peer`` through digests, then resume from the digest's cursor."""
    from exchange.store.received import apply_batch

    try:
        buckets, cursor = differing_buckets(puller, peer)
        step = puller.limits.max_digest_entries
        for start in range(0, len(buckets), step):
            request = sync_pb2.PullRequest(
                max_entries=puller.limits.pull_batch_entries, only=buckets[start : start + step]
            )
            puller.stream(peer, request, report, progress, save_cursor=False)
        if report.truncated:
            return  # not all of it came: the flag stays, the next pull repairs again
        # Resume normal pulls from the digest's position; the repair flag is cleared with it.
        apply_batch(puller.store, peer, [], cursor, repaired=True)
        report.repaired = True
    except grpc.RpcError as error:
        report.error = f"repair failed: {error.code().name}: {clip(error.details(), 300)}"
    except RepairError as error:
        report.error = f"repair failed: {clip(str(error), 300)}"
