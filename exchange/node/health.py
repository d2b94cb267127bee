"""The standard gRPC health service (grpc.health.v1), behind the same guard, and the
monitor that turns it NOT_SERVING while the node's database cannot be used, and the
warnings of certificates and a manifest close to their expiry (logged; also a metric)."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from grpc_health.v1 import health_pb2

from exchange.core.identity import Principal, Role
from exchange.errors import NotFound, TooLarge, clip
from exchange.node.rpc import Method, call_active
from exchange.pki import Expiry
from exchange.runtime import Periodic
from exchange.store import Store
from exchange.store.schema import meta

log = logging.getLogger("exchange.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_WATCHERS = 4  # concurrent Watch streams, of partners and of users each; each holds an RPC thread
_WATCH_POLL_SECONDS = 1.0


class Health:
    def __init__(self, services: list[str]) -> None:
        self._status = dict.fromkeys(["", *services], SERVING)
        self._changed = threading.Condition()
        self._stopped = False
        # Partners' watches apart from users', so partners can never take the users' (fair serving).
        self._watchers = {partner: threading.BoundedSemaphore(MAX_WATCHERS) for partner in (True, False)}
        self._watching = 0  # Watch streams open now, at most 2 * MAX_WATCHERS

    def methods(self) -> list[Method]:
        return [
            Method("Check", health_pb2.HealthCheckRequest, self.check),
            Method("Watch", health_pb2.HealthCheckRequest, self.watch, streaming=True),
        ]

    def set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        with self._changed:
            if self._stopped:
                return  # a stopping node stays NOT_SERVING whatever the monitor last saw
            for name in self._status:
                self._status[name] = status
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            for name in self._status:
                self._status[name] = NOT_SERVING
            self._changed.notify_all()

    def check(self, request: health_pb2.HealthCheckRequest, _caller: Principal) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            raise NotFound(f"service {clip(request.service)!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def watch(
        self, request: health_pb2.HealthCheckRequest, caller: Principal
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        # A Watch holds an RPC thread while it lasts: a few at a time, and each ends as
        # soon as its client is gone, or one identity could take every thread.
        watchers = self._watchers[caller.role is Role.NODE]
        if not watchers.acquire(blocking=False):
            raise TooLarge(f"at most {MAX_WATCHERS} health watches at a time")
        with self._changed:
            self._watching += 1
        try:
            yield from self._watch(request.service)
        finally:
            with self._changed:
                self._watching -= 1
            watchers.release()

    @property
    def watching(self) -> int:
        """How many Watch streams are open now."""
        return self._watching

    def _watch(self, service: str) -> Iterator[health_pb2.HealthCheckResponse]:
        active = call_active.get()
        last = None
        while active():
            with self._changed:
                status = self._status.get(service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                if status == last:
                    if self._stopped:
                        return
                    self._changed.wait(_WATCH_POLL_SECONDS)
                    continue
            last = status
            yield health_pb2.HealthCheckResponse(status=status)


Probe = Callable[[], None]  # returns if the database can be used, raises if not


def database_probe(store: Store) -> Probe:
    """What the monitor tries: ``store.ping()``, and for SQLite, opening the file afresh.

    On SQLite, ``store.ping()`` runs ``SELECT 1`` on a pooled connection that already
    holds the file open: it keeps succeeding when the file is gone, replaced, or its
    volume moved or unmounted, while every new connection (the pool grows under load,
    and a restart) would fail or, worse, create an empty database. So the probe also
    opens the path as a new connection would, without ever creating it (mode=rw), and
    reads the store's own ``meta`` table (an empty or foreign file fails that too).
    """
    url = store.engine.url
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return store.ping  # a server database: a fresh round trip that reads the node's tables
    uri = Path(database).absolute().as_uri() + "?mode=rw"

    def probe() -> None:
        store.ping()
        with closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
            conn.execute(f"SELECT 1 FROM {meta.name} LIMIT 1").fetchall()

    return probe


class StoreMonitor:
    """Tries the database every ``interval`` seconds and sets every service's health to match."""

    def __init__(self, health: Health, probe: Probe, interval: float) -> None:
        self._health = health
        self._probe = probe
        self._thread = Periodic("store-monitor", interval, self.check, join_seconds=interval + 10.0)
        self._up = True
        self._problem = ""

    @property
    def up(self) -> bool:
        return self._up

    def check(self) -> bool:
        """Probe once, update the health status, log a change; returns whether the database is up."""
        try:
            self._probe()
            problem = ""
        except Exception as error:  # any failure to use the database means NOT_SERVING
            problem = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        up = not problem
        if up != self._up or problem != self._problem:
            if up:
                log.info("database usable again: health SERVING")
            else:
                log.error("database unusable (%s): health NOT_SERVING", problem)
        self._up, self._problem = up, problem
        self._health.set_all(SERVING if up else NOT_SERVING)
        return up

    def start(self) -> None:
        self.check()  # the first Check after start already tells the truth
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop()


# --- expiry warnings ------------------------------------------------------------------------

EXPIRY_WARNING_DAYS = 30  # a certificate or the manifest closer than this to its end is warned of
EXPIRY_LOG_SECONDS = 86400.0  # the node logs its warnings at start and then once a day


def expiry_warnings(items: list[Expiry], now: dt.datetime, threshold_days: float = EXPIRY_WARNING_DAYS) -> list[str]:
    """One line per certificate or manifest that expires within ``threshold_days`` (or has
    expired, or cannot be read): what, when, and what to do."""
    lines = []
    for item in items:
        if item.problem:
            lines.append(f"{item.label}: {item.problem}")
            continue
        days = item.days(now)
        if days is None or days >= threshold_days:
            continue
        fix = "a new manifest version" if item.kind == "manifest" else "`exchange pki renew`"
        when = f"{item.not_after:%Y-%m-%d %H:%M} UTC" if item.not_after is not None else ""
        lines.append(f"{item.label} expired on {when}: {fix}" if days < 0
                     else f"{item.label} expires in {int(days)} days ({when}): {fix}")
    return lines


class ExpiryWatch:
    """Logs the expiry warnings at start and once a day (the metric says the same on every scrape)."""

    def __init__(self, expiries: Callable[[], list[Expiry]], interval: float = EXPIRY_LOG_SECONDS) -> None:
        self._expiries = expiries
        self._thread = Periodic("expiry-watch", interval, self.check, at_start=True, join_seconds=5.0)

    def check(self) -> list[str]:
        lines = expiry_warnings(self._expiries(), dt.datetime.now(dt.UTC))
        for line in lines:
            log.warning("expiry: %s", line)
        return lines

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop()
