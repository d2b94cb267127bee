"""The pull schedule: every peer on its own interval, with jitter and backoff.

Each peer has its own thread, so a slow or hostile partner (a stalled stream,
digests that take their full deadline) delays only its own pulls; writes are
serialised by the store anyway. A failing peer is retried after an
exponentially growing delay, capped, so an unreachable partner costs little;
the first success resets it.

Of several replicas sharing a database, only the one elected by
``exchange.sync.leader`` pulls; the others poll the election as often as the
most frequent peer is pulled, so a replica that dies is replaced within about
one pull interval.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence

from exchange.config import PeerEntry
from exchange.sync.leader import Leadership
from exchange.sync.puller import Puller
from exchange.sync.report import PullReport

log = logging.getLogger("exchange.sync")

JITTER = 0.2  # +-20% of the interval, so partners' pulls do not align
MAX_BACKOFF_SECONDS = 300.0


def next_delay(interval: float, failures: int, rng: random.Random) -> float:
    base = interval if failures == 0 else min(interval * 2**failures, MAX_BACKOFF_SECONDS)
    return base * (1 + rng.uniform(-JITTER, JITTER))


class Schedule:
    def __init__(
        self, puller: Puller, peers: Sequence[PeerEntry], *, leadership: Leadership | None = None,
        seed: int | None = None,
    ) -> None:
        self._puller = puller
        self._peers = {p.agency: p for p in peers}
        self._leadership = leadership
        self._leading = threading.Event()
        if leadership is None:
            self._leading.set()
        else:
            puller.may_continue = self._leading.is_set  # a demoted replica stops at the next batch
        self.election_seconds = min(max(min(p.interval_seconds for p in peers), 0.1), 5.0) if peers else 1.0
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._adding = threading.Lock()
        self.last: dict[str, PullReport] = {}

    @property
    def leading(self) -> bool:
        """Whether this replica runs the schedule now."""
        return self._leading.is_set()

    def start(self) -> None:
        if self._leadership is not None:
            thread = threading.Thread(target=self._elect, args=(self._leadership,), name="schedule-election",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        with self._adding:
            self._started = True
            for agency in list(self._peers):
                self._start_peer(agency)

    def _start_peer(self, agency: str) -> None:
        thread = threading.Thread(target=self._run, args=(agency,), name=f"pull-{agency}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def add(self, peer: PeerEntry) -> bool:
        """Pull from ``peer`` too, from now on (a partner that joined); False if it already is."""
        with self._adding:
            if peer.agency in self._peers or self._stop.is_set():
                return False
            self._peers[peer.agency] = peer
            if self._started:
                self._start_peer(peer.agency)
            return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling; a pull in progress finishes its current batch and commits."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._leadership is not None and not any(t.is_alive() for t in self._threads):
            self._leading.clear()
            self._leadership.release()

    def _elect(self, leadership: Leadership) -> None:
        while not self._stop.is_set():
            if leadership.poll():
                self._leading.set()
            else:
                self._leading.clear()
            self._stop.wait(self.election_seconds)

    def _delay(self, agency: str, failures: int) -> float:
        with self._rng_lock:
            return next_delay(self._peers[agency].interval_seconds, failures, self._rng)

    def _run(self, agency: str) -> None:
        failures = 0
        with self._rng_lock:
            first = self._rng.uniform(0, 1)  # partners' first pulls spread out, not all at once
        if self._stop.wait(first):
            return
        while not self._stop.is_set():
            if not self._leading.is_set():  # another replica pulls; wait to be elected
                self._stop.wait(self.election_seconds)
                continue
            try:
                report = self._puller.pull(agency)
            except Exception as error:  # a failure never stops this peer's schedule
                log.exception("pull from %s failed unexpectedly", agency, extra={"peer": agency})
                report = PullReport(agency, error=f"internal error: {error}")
            self.last[agency] = report
            failures = failures + 1 if report.error else 0
            if report.error and self._stop.is_set():
                log.info("pull from %s cut short by shutdown: %s", agency, report.error, extra={"peer": agency})
            elif report.error:
                log.warning("pull from %s failed (%d in a row): %s", agency, failures, report.error,
                            extra={"peer": agency})
            if self._stop.wait(self._delay(agency, failures)):
                return
