"""Hosting a node: load configuration and keys, open the store, serve over mutual TLS."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import TextIO

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange import logs
from exchange.config import NodeConfig
from exchange.core.manifest import Manifest
from exchange.core.marking import Marking
from exchange.core.policy import may_hold
from exchange.errors import ConfigError
from exchange.node.admission import Admission
from exchange.node.auth import Authenticator
from exchange.node.health import Health, StoreMonitor, database_probe
from exchange.node.liaison import LiaisonService
from exchange.node.metrics import MetricsServer, NodeMetrics
from exchange.node.notify import Notifier
from exchange.node.query import QueryService
from exchange.node.reflection import SERVICES as REFLECTION_SERVICES
from exchange.node.reflection import Reflection
from exchange.node.review import ReviewService
from exchange.node.rpc import Guard, service_handler
from exchange.node.sightings import SightingService
from exchange.node.submission import SubmissionService
from exchange.node.sync import SyncService
from exchange.node.taxii.feed import Feed
from exchange.node.taxii.server import TaxiiServer
from exchange.node.tokens import PageTokens
from exchange.pki import load_private_key
from exchange.records.envelope import Signer
from exchange.store import Store, files, integrity
from exchange.store.current import reevaluate_holdings
from exchange.store.peers import manifest_changed
from exchange.sync.leader import Leadership
from exchange.sync.puller import Puller
from exchange.sync.schedule import Schedule

log = logging.getLogger("exchange.node")


def load_signer(agency: str, key_path: Path, manifest: Manifest) -> Signer:
    """The agency's signing key, with the key id the manifest publishes for it."""
    key = load_private_key(key_path)
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_path}: a record-signing key must be Ed25519")
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for published in manifest.partner(agency).keys:
        if published.public_key == public:
            if published.compromised:
                raise ConfigError(f"{key_path}: key {published.key_id} is marked compromised in the manifest")
            return Signer(agency, published.key_id, key)
    raise ConfigError(f"{key_path}: this key is not among {agency}'s signing keys in the manifest")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


class Node:
    """One agency's node. ``start()`` binds and serves; ``stop()`` drains and closes."""

    def __init__(self, config: NodeConfig, *, manifest: Manifest | None = None, schedule: bool = True) -> None:
        self.config = config
        self.manifest = manifest or config.load_manifest()
        if config.agency not in self.manifest.partners:
            raise ConfigError(f"{config.agency} is not in the federation manifest {config.manifest_path}")
        agency_dir = config.agency_dir
        self.signer = load_signer(config.agency, agency_dir / "signing.key", self.manifest)
        self._server_key = _read(agency_dir / "node.key")
        self._server_cert = _read(agency_dir / "node.crt")
        if config.database_url.startswith("sqlite:///"):
            config.data_dir.mkdir(mode=files.PRIVATE_DIR, parents=True, exist_ok=True)
        files.check_private(config.database_url)  # every record and the sealing key: never group-readable
        seal = integrity.for_node(config.pki_dir, config.agency, config.database_url)
        self.store = Store.open(config.database_url, agency=config.agency, seal=seal,
                                distrusted_keys=self.manifest.compromised_keys)
        self._adopt_manifest()
        limits = config.limits
        self.health = Health(["exchange.v1.SubmissionService", "exchange.v1.QueryService", "exchange.v1.SyncService",
                              "exchange.v1.LiaisonService", "exchange.v1.ReviewService"])
        self.monitor = StoreMonitor(self.health, database_probe(self.store), config.health_check_seconds)
        self.metrics = NodeMetrics(self.store, [p.agency for p in config.peers], lambda: self.monitor.up)
        self.admission = Admission(limits)  # fair serving (exchange/node/admission.py)
        authenticator = Authenticator(agency=config.agency, manifest=self.manifest, users=config.users)
        guard = Guard(authenticator, self.admission, self.metrics)
        submission = SubmissionService(config.agency, self.store, self.signer, self.manifest, limits, config.review)
        review = ReviewService(config.agency, submission, config.users)
        tokens = PageTokens(self.store.token_key())  # tokens are bound to the listing that issued them
        query = QueryService(config.agency, self.store, self.manifest, limits, tokens)
        sightings = SightingService(config.agency, self.store, self.manifest, limits, self.signer)
        sync = SyncService(config.agency, self.store, self.manifest, limits)
        liaison = LiaisonService(config.agency, self.store, self.manifest, limits, tokens,
                                 notify_targets=frozenset(config.notify))
        self._handlers = [
            service_handler(guard, "exchange.v1.SyncService", sync.methods() + sightings.sync_methods()),
            service_handler(guard, "exchange.v1.SubmissionService", submission.methods()),
            service_handler(guard, "exchange.v1.QueryService", query.methods()),
            service_handler(guard, "exchange.v1.LiaisonService", liaison.methods() + sightings.liaison_methods()),
            service_handler(guard, "exchange.v1.ReviewService", review.methods()),
            service_handler(guard, "grpc.health.v1.Health", self.health.methods()),
        ]
        # Reflection describes exactly the services registered above, through the same guard.
        served = [h.service_name() for h in self._handlers if isinstance(h, grpc.ServiceRpcHandler)]
        reflection = Reflection(served)
        self._handlers += [service_handler(guard, name, reflection.methods()) for name in REFLECTION_SERVICES]
        # TAXII 2.1, read-only, when node.toml has [taxii] (exchange/node/taxii): same identity rules,
        # same decision; its next tokens are bound to the caller and the query like Search's.
        self.taxii = None if config.taxii is None else TaxiiServer(
            config.taxii,
            Feed(config.agency, self.store, self.manifest, tokens, config.taxii.collections),
            authenticator, self.admission, cert_path=agency_dir / "node.crt", key_path=agency_dir / "node.key",
            ca_pem=self.manifest.partner(config.agency).ca_cert_pem)
        self.taxii_port = 0
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._metrics_server: MetricsServer | None = None
        self.port = 0
        self.metrics_port = 0  # the Prometheus endpoint's port once started (0: none)
        self.puller = Puller(agency=config.agency, manifest=self.manifest, store=self.store,
                             node_key=self._server_key, node_cert=self._server_cert, limits=limits,
                             metrics=self.metrics)
        self.schedule = (
            Schedule(self.puller, config.peers, leadership=Leadership(self.store.engine))
            if schedule and config.peers else None
        )
        if self.schedule is not None:
            self.metrics.follow_leadership(lambda: self.schedule is not None and self.schedule.leading)
        # Watch hits pushed to node.toml's [[notify]] targets; of replicas, only the leader pushes.
        self.notifier = Notifier(
            agency=config.agency, store=self.store, manifest=self.manifest, users=config.users,
            targets=config.notify, interval=config.notify_check_seconds,
            keep_delivered_seconds=config.notify_keep_delivered_days * 86400,
            may_run=lambda: self.schedule is None or self.schedule.leading,
        ) if config.notify else None

    def _adopt_manifest(self) -> None:
        """A changed manifest: drop what we may no longer hold, repair with every peer."""
        if not manifest_changed(self.store, self.manifest.version, [p.agency for p in self.config.peers]):
            return
        accreditation = self.manifest.partner(self.config.agency).accreditation

        def holdable(originator: str, marking: Marking) -> bool:
            return may_hold(agency=self.config.agency, accreditation=accreditation, originator=originator,
                            marking=marking, known_agencies=self.manifest.agencies).allowed

        dropped = reevaluate_holdings(self.store, holdable)
        log.info("manifest version %d adopted: %d records no longer held; peers flagged for repair",
                 self.manifest.version, dropped)

    def credentials(self) -> grpc.ServerCredentials:
        # Clients must present a certificate from one of the federation's CAs:
        # the own CA for users, partner CAs for partner nodes.
        roots = "".join(p.ca_cert_pem for p in self.manifest.partners.values()).encode("ascii")
        return grpc.ssl_server_credentials(
            [(self._server_key, self._server_cert)], root_certificates=roots, require_client_auth=True
        )

    def start(self, listen: str | None = None) -> int:
        limits = self.config.limits
        # Kept, so stop() can wait for every handler to return before the store closes.
        self._executor = futures.ThreadPoolExecutor(max_workers=limits.rpc_threads,
                                                    thread_name_prefix=f"{self.config.agency}-rpc")
        server = grpc.server(
            self._executor,
            handlers=self._handlers,
            # Beyond this, calls are refused (RESOURCE_EXHAUSTED) instead of queueing without end.
            maximum_concurrent_rpcs=limits.rpc_threads * 8,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        address = listen or self.config.listen
        try:
            self.port = server.add_secure_port(address, self.credentials())
        except RuntimeError:
            raise ConfigError(f"cannot listen on {address}") from None
        if self.port == 0:
            raise ConfigError(f"cannot listen on {address}")
        self.monitor.start()  # health tells the truth about the database from the first call
        self.admission.start()  # the watchdog that cancels stalled and overlong streams
        server.start()
        self._server = server
        self._start_metrics()
        if self.taxii is not None:
            try:
                self.taxii_port = self.taxii.start()
            except ConfigError:
                self.stop(grace=0)
                raise
        if self.schedule is not None:
            self.schedule.start()
        if self.notifier is not None:
            self.notifier.start()
        log.info("node %s serving on %s", self.config.agency, address)
        return self.port

    def _start_metrics(self) -> None:
        if not self.config.metrics_listen:
            return
        metrics_server = MetricsServer(self.metrics.registry, self.config.metrics_listen)
        try:
            self.metrics_port = metrics_server.start()
        except OSError as error:
            # Monitoring is not worth refusing to serve partners for: say so loudly and go on
            # (Prometheus shows the target down). Several nodes on one host need their own ports.
            log.error("no metrics endpoint: cannot listen on %s (%s)", self.config.metrics_listen,
                      error.strerror or error)
            return
        self._metrics_server = metrics_server

    def stop(self, grace: float = 5.0) -> None:
        """Stop so that nothing is left half-written, then close the store.

        Every write is one transaction, so even a kill leaves a consistent database; this
        order also lets work in progress finish instead of being rolled back: the pull in
        flight commits the batch it holds (with its cursor) and ends, RPCs in flight get
        ``grace`` seconds, and the store closes only once no thread can write to it.
        """
        self.health.stop()  # NOT_SERVING at once, so clients and partners look elsewhere
        self.monitor.stop()
        stopped = self._server.stop(grace) if self._server is not None else None  # no new calls from here
        if self.taxii is not None:
            self.taxii.stop()  # waits for the pages in flight
        if self.schedule is not None:
            self.schedule.stop(timeout=0)  # no new pull starts...
        self.puller.close()  # ...and the one in flight is cancelled at its next batch
        if self.notifier is not None:
            self.notifier.stop()  # a delivery in flight finishes (and is marked) first
        if self.schedule is not None:
            self.schedule.stop()  # waits for that batch's commit
        if stopped is not None:
            stopped.wait()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # every handler has returned, its transaction ended
            self._executor = None
        self.admission.stop()
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        self.store.close()


def run_node(config: NodeConfig, *, level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and close the store."""
    logs.configure(agency=config.agency, level=level, stream=stream)  # JSON lines on stderr (exchange/logs.py)
    # A thread's uncaught exception is logged like any other line, not printed as a bare traceback.
    threading.excepthook = lambda hook: log.error(
        "uncaught exception in thread %s", hook.thread.name if hook.thread else "?",
        exc_info=hook.exc_value or True)
    node = Node(config)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    node.start()
    print(f"{config.agency} node listening on {config.listen}", flush=True)
    if config.taxii is not None:
        print(f"{config.agency} TAXII 2.1 on https://{config.taxii.listen}/taxii2/", flush=True)
    stop.wait()
    log.info("node %s stopping", config.agency)
    node.stop()
    log.info("node %s stopped", config.agency)
