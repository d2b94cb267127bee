"""The pull schedule: every peer on its own interval, with jitter and backoff.

One thread runs the schedule; pulls of different peers run one after another
(a node's store takes one writer at a time anyway). A failing peer is retried
after an exponentially growing delay, capped, so an unreachable partner costs
little; the first success resets it.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Sequence

from exchange.config import PeerEntry
from exchange.sync.puller import Puller, PullReport

log = logging.getLogger("exchange.sync")

JITTER = 0.2  # +-20% of the interval, so partners' pulls do not align
MAX_BACKOFF_SECONDS = 300.0


def next_delay(interval: float, failures: int, rng: random.Random) -> float:
    base = interval if failures == 0 else min(interval * 2**failures, MAX_BACKOFF_SECONDS)
    return base * (1 + rng.uniform(-JITTER, JITTER))


class Schedule:
    def __init__(self, puller: Puller, peers: Sequence[PeerEntry], *, seed: int | None = None) -> None:
        self._puller = puller
        self._peers = {p.agency: p for p in peers}
        self._failures = dict.fromkeys(self._peers, 0)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict[str, PullReport] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pull-schedule", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling; a pull in progress finishes its current batch and commits."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        queue = [(time.monotonic() + self._rng.uniform(0, 1), agency) for agency in self._peers]
        heapq.heapify(queue)
        while queue and not self._stop.is_set():
            due, agency = heapq.heappop(queue)
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                report = self._puller.pull(agency)
            except Exception as error:  # one peer's failure never stops the schedule
                log.exception("pull from %s failed unexpectedly", agency, extra={"peer": agency})
                report = PullReport(agency, error=f"internal error: {error}")
            self.last[agency] = report
            self._failures[agency] = self._failures[agency] + 1 if report.error else 0
            if report.error and self._stop.is_set():
                log.info("pull from %s cut short by shutdown: %s", agency, report.error, extra={"peer": agency})
            elif report.error:
                log.warning("pull from %s failed (%d in a row): %s", agency, self._failures[agency], report.error,
                            extra={"peer": agency})
            delay = next_delay(self._peers[agency].interval_seconds, self._failures[agency], self._rng)
            heapq.heappush(queue, (time.monotonic() + delay, agency))
