"""Anti-entropy digests: held record versions summarised per originator and bucket of ids.

Both sides of a repair summarise the same way: the server what it releases to the
caller (``exchange.node.sync``), the puller what it holds that the server would
release to it (``exchange.sync.repair``). Equal holdings give equal summaries, so a
difference is narrowed down by bisection and only the differing buckets are pulled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["Item", "group", "summary_hash"]

Item = tuple[str, str, int, bytes]  # (originator, record_id, version, content_hash)


def group(items: Iterable[Item], *, prefix: str, by_bucket: bool) -> dict[tuple[str, str], list[Item]]:
    """Items grouped by (originator, bucket).

    Without ``by_bucket`` (a top-level digest): one group per originator, bucket "".
    With it (one originator's records under ``prefix``): one group per next character
    of the record id after the prefix, so each call narrows a difference down by one.
    """
    groups: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        bucket = item[1][: len(prefix) + 1] if by_bucket else ""
        groups.setdefault((item[0], bucket), []).append(item)
    return groups


def summary_hash(items: Iterable[Item]) -> bytes:
    """SHA-256 over the sorted items: the same set gives the same hash on every node."""
    digest = hashlib.sha256()
    for originator, record_id, version, content_hash in sorted(items):
        digest.update(f"{originator}\x00{record_id}\x00{version}\x00".encode() + content_hash)
    return digest.digest()
