"""What one pull did: the report a pull, and a repair inside it, fill in.

Apart from ``puller`` so that ``repair`` (which the puller calls) can fill it in
without importing the puller back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from exchange.store.received import BatchReport, merge
from exchange.store.refusals import RefusalTally

Progress = Callable[[int], None]  # called with the number of entries received so far


@dataclass
class PullReport:
    peer: str
    received: int = 0
    batches: int = 0
    stale_cursor: bool = False  # the peer refused our cursor (stale, or one it cannot open): repaired
    repaired: bool = False
    truncated: bool = False  # stopped at pull_max_entries; the rest comes with the next pull
    error: str = ""
    applied: BatchReport = field(default_factory=BatchReport)
    seconds: float = 0.0
    sightings: int = 0  # sightings stored (exchange/sync/sightings.py)
    # The pull's refusals, aggregated across its batches into bounded events (store.refusals).
    tally: RefusalTally = field(default_factory=RefusalTally, repr=False, compare=False)

    def add(self, batch: BatchReport) -> None:
        merge(self.applied, batch)

    def fields(self) -> dict[str, object]:
        """The report as log fields (exchange/logs.py), one JSON field each, never a repr."""
        applied = self.applied
        fields: dict[str, object] = {
            "peer": self.peer, "received": self.received, "batches": self.batches,
            "stored": applied.stored, "duplicates": applied.duplicates, "resigned": applied.resigned,
            "older": applied.older,
            "refused": applied.refused, "withdrawals": applied.withdrawals,
            "equivocations": applied.equivocations, "stale_cursor": self.stale_cursor,
            "repaired": self.repaired, "truncated": self.truncated,
            "duration_ms": round(self.seconds * 1000, 1),
            # Counts by kind (a fixed set), never one item per entry: a line's size does not
            # grow with what the partner sent.
            "events": dict(sorted(applied.events.items())),
        }
        if self.error:
            fields["error"] = " ".join(self.error.split())
        return fields
