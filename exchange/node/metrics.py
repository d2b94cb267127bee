"""A node's Prometheus metrics, served on their own HTTP port (loopback by default).

Per-originator counts say who shares how much with whom, which is itself
sensitive (docs/design.md "Interfaces"): the endpoint binds 127.0.0.1 unless
``metrics_listen`` in node.toml says otherwise, and a non-loopback address is
logged as a warning. Each node has its own registry (never the process-global
one), so several nodes in one process do not mix their series.

Series (the exposition format's ``# HELP`` lines say the same):

    exchange_records_held{originator}                   records held, current versions (read on scrape)
    exchange_pull_last_success_timestamp_seconds{peer}  Unix time of the last pull that ended without error
    exchange_pull_lag_seconds{peer}                     seconds since then; +Inf for a configured peer
                                                        never pulled successfully (so `> N` alerts fire)
    exchange_received_rejections_total{reason}          received entries refused (invalid, not-holdable)
                                                        and equivocations detected, after their batch commits
    exchange_rpc_duration_seconds{method,code}          RPC latency by method and gRPC status (histogram)
    exchange_database_up                                1 while the health monitor can use the database
    exchange_expiry_days{kind,name}                     days until the node's, its CA's and each user's
                                                        certificate and the manifest expire (negative: expired)

A scrape reads the store twice: one GROUP BY over the records' (originator,
record_id) index and the small peers table, so it stays cheap on a big store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from exchange.config import split_host_port
from exchange.observe import Metrics
from exchange.pki import Expiry
from exchange.store import Store
from exchange.store.current import held_by_originator
from exchange.store.peers import peer_states

if TYPE_CHECKING:
    from wsgiref.types import StartResponse
    from wsgiref.types import WSGIApplication as WSGIApp

__all__ = ["REJECTION_REASONS", "MetricsServer", "NodeMetrics"]

log = logging.getLogger("exchange.metrics")

# Security event kinds (exchange.store.received) -> the reason label. A closed set, so
# the label's cardinality is fixed whatever a partner sends.
REJECTION_REASONS = {
    "refused-invalid": "invalid",
    "refused-not-holdable": "not-holdable",
    "refused-relayed": "relayed",
    "refused-excess-evidence": "excess-evidence",
    "equivocation": "equivocation",
}

# Seconds. Unary calls take milliseconds; a Pull stream can run up to its deadline (600 s).
RPC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


class NodeMetrics(Metrics):
    """The Prometheus implementation of :class:`exchange.observe.Metrics` for one node."""

    def __init__(self, store: Store, peers: Sequence[str], database_up: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._rpc = Histogram(
            "exchange_rpc_duration_seconds", "RPC latency by method and gRPC status code",
            ["method", "code"], buckets=RPC_BUCKETS, registry=self.registry,
        )
        self._rejections = Counter(
            "exchange_received_rejections", "Received entries refused or found equivocal, by reason",
            ["reason"], registry=self.registry,
        )
        for reason in REJECTION_REASONS.values():
            self._rejections.labels(reason)  # present at 0 from the start, so rate() sees the first one
        self._leader = Gauge(
            "exchange_schedule_leader", "1 while this replica runs the pull schedule (one replica at a time)",
            registry=self.registry,
        )
        self._last_ok: dict[str, float] = {}
        self._lock = threading.Lock()
        self.registry.register(_StoreCollector(store, tuple(peers), self._last_success, database_up))

    # --- exchange.observe.Metrics -----------------------------------------------------------

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        self._rpc.labels(method, code).observe(seconds)

    def pull_finished(self, peer: str, *, ok: bool, at: float) -> None:
        if ok:
            with self._lock:
                self._last_ok[peer] = max(at, self._last_ok.get(peer, 0.0))

    def entries_rejected(self, peer: str, events: Mapping[str, int]) -> None:
        for event, count in events.items():
            reason = REJECTION_REASONS.get(event)
            if reason is not None:
                self._rejections.labels(reason).inc(count)

    def follow_expiries(self, expiries: Callable[[], list[Expiry]]) -> None:
        """``exchange_expiry_days``, read at every scrape (a renewed certificate shows at once)."""
        self.registry.register(_ExpiryCollector(expiries))

    def follow_leadership(self, leading: Callable[[], bool]) -> None:
        self._leader.set_function(lambda: 1.0 if leading() else 0.0)

    def _last_success(self, peer: str) -> float | None:
        with self._lock:
            return self._last_ok.get(peer)


class _ExpiryCollector(Collector):
    def __init__(self, expiries: Callable[[], list[Expiry]]) -> None:
        self._expiries = expiries

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        now = dt.datetime.now(dt.UTC)
        for item in self._expiries():
            days = item.days(now)
            if days is not None:
                family.add_metric([item.kind, item.name], days)
            elif item.problem:  # unreadable: as urgent as expired
                family.add_metric([item.kind, item.name], -math.inf)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("exchange_expiry_days",
                                 "Days until the certificate or manifest expires (negative: expired)",
                                 labels=["kind", "name"])


class _StoreCollector(Collector):
    """Series read from the store at scrape time, so they survive restarts and include
    pulls made by ``exchange sync`` while the node ran."""

    def __init__(
        self, store: Store, peers: tuple[str, ...], last_ok: Callable[[str], float | None],
        database_up: Callable[[], bool],
    ) -> None:
        self._store = store
        self._peers = peers
        self._last_ok = last_ok
        self._database_up = database_up

    def describe(self) -> Iterable[Metric]:
        # Names only: registering must not query the database.
        return self._families()

    def collect(self) -> Iterable[Metric]:
        held, last_success, lag, up = self._families()
        try:
            counts, stored = self._read()
        except SQLAlchemyError as error:
            # Still answer: the other series (and database_up) say what is wrong.
            log.warning("metrics: cannot read the store: %s", type(error).__name__)
            counts, stored = {}, {}
        for originator, count in counts.items():
            held.add_metric([originator], count)
        now = time.time()
        for peer in self._peers:
            candidates = [t for t in (stored.get(peer), self._last_ok(peer)) if t is not None]
            if candidates:
                at = max(candidates)
                last_success.add_metric([peer], at)
                lag.add_metric([peer], max(0.0, now - at))
            else:
                lag.add_metric([peer], math.inf)
        up.add_metric([], 1.0 if self._database_up() else 0.0)
        return [held, last_success, lag, up]

    def _read(self) -> tuple[dict[str, int], dict[str, float]]:
        counts = held_by_originator(self._store)
        # A peer's last_success moves with every committed batch (microseconds).
        stored = {p.agency: p.last_success / 1e6 for p in peer_states(self._store) if p.last_success is not None}
        return counts, stored

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("exchange_records_held", "Records held (current versions), by originator",
                              labels=["originator"]),
            GaugeMetricFamily("exchange_pull_last_success_timestamp_seconds",
                              "Unix time of the last successful pull from the peer", labels=["peer"]),
            GaugeMetricFamily("exchange_pull_lag_seconds",
                              "Seconds since the last successful pull from the peer (+Inf: never)",
                              labels=["peer"]),
            GaugeMetricFamily("exchange_database_up", "1 while the node can use its database"),
        )


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the node's exit


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access lines: the node's log is JSON only (exchange/logs.py), and scrapes are noise."""


def metrics_app(registry: CollectorRegistry) -> WSGIApp:
    """The exposition at /metrics and 404 everywhere else, so a mistyped scrape path fails loudly."""
    exposition = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are at /metrics\n"]
        body: Iterable[bytes] = exposition(environ, start_response)
        return body

    return app


class MetricsServer:
    """The HTTP endpoint serving one registry at /metrics (404 on any other path)."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self._registry = registry
        self.listen = listen
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        """Bind and serve; returns the port. Raises OSError if the address cannot be bound."""
        host, port = split_host_port(self.listen)
        if not _is_loopback(host):
            log.warning("metrics listen on %s, not loopback: per-originator counts are sensitive; "
                        "restrict who can reach this port", self.listen)
        server_class = _Server6 if ":" in host else _Server
        self._server = make_server(host, port, metrics_app(self._registry), server_class=server_class,
                                   handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port = int(self._server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
