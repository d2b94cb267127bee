"""Hosting a node: load configuration and keys, open the store, serve over mutual TLS."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path
from typing import TextIO

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange import logs, runtime
from exchange.config import EVERY_PARTNER, NodeConfig, PeerEntry
from exchange.core.manifest import Manifest
from exchange.core.marking import Marking
from exchange.core.policy import may_hold
from exchange.core.trust import Trust
from exchange.errors import ConfigError
from exchange.node.admission import Admission
from exchange.node.auth import Authenticator
from exchange.node.health import ExpiryWatch, Health, StoreMonitor, database_probe
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
from exchange.node.tls import ServerTLS
from exchange.node.tokens import PageTokens
from exchange.node.trusted import FILE, accept, trusted_at_start
from exchange.pki import Expiry, expiries, load_private_key
from exchange.records.envelope import Signer
from exchange.records.keyring import CURRENT_KEY, KeyRing
from exchange.records.manifests import SignedManifest, parse_document
from exchange.store import Store, files, integrity
from exchange.store.current import reevaluate_holdings
from exchange.store.peers import manifest_changed
from exchange.sync.leader import Leadership
from exchange.sync.puller import Puller
from exchange.sync.report import PullReport
from exchange.sync.schedule import Schedule

log = logging.getLogger("exchange.node")

MANIFEST_CHECK_SECONDS = 2.0  # how often a running node looks at its manifest file
LEARN_INTERVAL_SECONDS = 10.0  # at most one manifest fetch per partner that pulls from us


def check_own_material(config: NodeConfig, manifest: Manifest) -> None:
    """Refuse to run when this agency's own CA disagrees with the manifest it trusts: a
    folder re-made by `pki init --force`, or a manifest of another federation."""
    if config.agency not in manifest.partners:
        raise ConfigError(f"{config.agency} is not in the federation manifest {config.manifest_path}")
    ca_path = config.agency_dir / "ca.crt"
    if not ca_path.exists():
        return  # a node's folder need not hold its CA certificate; node.crt is checked by TLS
    try:
        own = x509.load_pem_x509_certificate(ca_path.read_bytes())
        published = x509.load_pem_x509_certificate(manifest.partner(config.agency).ca_cert_pem.encode("ascii"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{ca_path}: cannot compare with the manifest's CA: {exc}") from None
    if own != published:
        raise ConfigError(f"{ca_path} is not {config.agency}'s CA in the manifest it trusts (version "
                          f"{manifest.version}): this folder belongs to another federation or was re-made")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


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


class Node:
    """One agency's node. ``start()`` binds and serves; ``stop()`` drains and closes."""

    def __init__(self, config: NodeConfig, *, manifest: Manifest | None = None, schedule: bool = True) -> None:
        self.config = config
        # The one holder of the manifest trusted now: every service reads it at call time,
        # and adopt() replaces it while the node runs (exchange/core/trust.py).
        # A manifest passed in is trusted as given (tests, tools that built it); otherwise the
        # node trusts the signed manifest chain it keeps, from the file its operator installed.
        self.trust = Trust(manifest or config.load_manifest())
        self.document: SignedManifest | None = None  # the signed document of the manifest trusted
        self._file_seen: tuple[int, int] | None = None  # the manifest file as last read (mtime, size)
        self.manifest_check_seconds = MANIFEST_CHECK_SECONDS
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None
        self._adopting = threading.RLock()
        check_own_material(config, self.manifest)
        agency_dir = config.agency_dir
        # The key that signs is the manifest's current key for this agency, asked at every
        # signature (exchange/records/keyring.py): a rotation takes effect when its manifest does.
        self.signer = KeyRing.load(config.agency, agency_dir, lambda: self.trust.manifest)
        try:
            self.signer.signer()
        except ConfigError:
            load_signer(config.agency, agency_dir / CURRENT_KEY, self.manifest)  # says what is wrong with it
            raise
        self.tls = ServerTLS(self.trust, agency_dir)
        if config.database_url.startswith("sqlite:///"):
            config.data_dir.mkdir(mode=files.PRIVATE_DIR, parents=True, exist_ok=True)
        files.check_private(config.database_url)  # every record and the sealing key: never group-readable
        seal = integrity.for_node(config.pki_dir, config.agency, config.database_url)
        # A node runs for months: its WAL is copied into the database by a thread of its own,
        # not inside a request's commit (exchange/store/checkpoint.py).
        self.store = Store.open(config.database_url, agency=config.agency, seal=seal,
                                distrusted_keys=self.manifest.compromised_keys, checkpoint_in_background=True)
        if manifest is None:
            try:
                self._trust_signed_chain()
            except BaseException:
                self.store.close()
                raise
        self._adopt_manifest()
        limits = config.limits
        self.health = Health(["exchange.v1.SubmissionService", "exchange.v1.QueryService", "exchange.v1.SyncService",
                              "exchange.v1.LiaisonService", "exchange.v1.ReviewService"])
        self.monitor = StoreMonitor(self.health, database_probe(self.store), config.health_check_seconds)
        self.metrics = NodeMetrics(self.store, [p.agency for p in self.peers()], lambda: self.monitor.up)
        self.metrics.follow_expiries(self.expiries)
        self.expiry_watch = ExpiryWatch(self.expiries)  # logs what expires soon, at start and daily
        authenticator = Authenticator(agency=config.agency, trust=self.trust, users=config.users)
        # Fair serving, and open streams of callers a new manifest revokes end (exchange/node/admission.py).
        self.admission = Admission(limits, recheck=authenticator.recheck)
        guard = Guard(authenticator, self.admission, self.metrics)
        submission = SubmissionService(config.agency, self.store, self.signer, self.trust, limits, config.review)
        review = ReviewService(config.agency, submission, config.users)
        tokens = PageTokens(self.store.token_key())  # tokens are bound to the listing that issued them
        query = QueryService(config.agency, self.store, self.trust, limits, tokens,
                             database_url=config.database_url, pki_dir=config.pki_dir)
        self.searches = query.searches
        sightings = SightingService(config.agency, self.store, self.trust, limits, self.signer)
        sync = SyncService(config.agency, self.store, self.trust, limits)
        self._learning: dict[str, float] = {}  # partner -> time.monotonic() we last fetched its manifest
        self._learners: list[threading.Thread] = []
        liaison = LiaisonService(config.agency, self.store, self.trust, limits, tokens,
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
            Feed(config.agency, self.store, self.trust, tokens, config.taxii.collections),
            authenticator, self.admission, cert_path=agency_dir / "node.crt", key_path=agency_dir / "node.key",
            ca_pem=self.manifest.partner(config.agency).ca_cert_pem)
        self.taxii_port = 0
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._metrics_server: MetricsServer | None = None
        self.port = 0
        self.metrics_port = 0  # the Prometheus endpoint's port once started (0: none)
        self.puller = Puller(agency=config.agency, trust=self.trust, store=self.store,
                             node_key=self.tls.key, node_cert=self.tls.cert, limits=limits,
                             metrics=self.metrics)
        if self.document is not None:
            # A partner on a newer manifest: its versions are offered here (exchange/sync/puller.py),
            # when we pull from it or when it pulls from us (exchange/node/sync.py).
            self.puller.adopt_manifests = self.offer
            sync.newer_elsewhere = self._learn_from
        self.tls.on_renewal = self._renewed  # partners and TAXII clients see the renewed certificate too
        self.schedule = (
            Schedule(self.puller, self.peers(), leadership=Leadership(self.store.engine))
            if schedule and config.peers else None
        )
        if self.schedule is not None:
            self.metrics.follow_leadership(lambda: self.schedule is not None and self.schedule.leading)
        # Watch hits pushed to node.toml's [[notify]] targets; of replicas, only the leader pushes.
        self.notifier = Notifier(
            agency=config.agency, store=self.store, trust=self.trust, users=config.users,
            targets=config.notify, interval=config.notify_check_seconds,
            keep_delivered_seconds=config.notify_keep_delivered_days * 86400,
            may_run=lambda: self.schedule is None or self.schedule.leading,
        ) if config.notify else None
        runtime.tune_collector()  # set up: what exists now is frozen out of collections

    @property
    def manifest(self) -> Manifest:
        """The manifest this node trusts now."""
        return self.trust.manifest

    def _renewed(self, key: bytes, cert: bytes) -> None:
        self.puller.use_certificate(key, cert)
        if self.taxii is not None:
            self.taxii.reload_certificate()

    def peers(self) -> list[PeerEntry]:
        """Whom this node pulls from under the manifest trusted now: node.toml's [[peers]],
        with ``agency = "*"`` standing for every other partner that has not left."""
        explicit = [p for p in self.config.peers if p.agency != EVERY_PARTNER]
        named = {p.agency for p in explicit}
        every = next((p for p in self.config.peers if p.agency == EVERY_PARTNER), None)
        if every is None:
            return explicit
        others = sorted(self.manifest.active_agencies - named - {self.config.agency})
        return explicit + [PeerEntry(code, every.interval_seconds) for code in others]

    def _trust_signed_chain(self) -> None:
        """Start from the newest manifest this node trusts (exchange/node/trusted.py), which
        must still agree with the agency's own CA and signing key (else: refuse to start)."""
        path = self.config.manifest_path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        self.document = trusted_at_start(self.store, data, str(path), dt.datetime.now(dt.UTC))
        self._file_seen = _stamp(path)
        check_own_material(self.config, self.document.manifest)
        trusted = self.document.manifest
        try:  # one of the node's signing keys (signing.key, or a retired one) must be usable under it
            KeyRing.load(self.config.agency, self.config.agency_dir, lambda: trusted).signer()
        except ConfigError:
            load_signer(self.config.agency, self.config.agency_dir / CURRENT_KEY, trusted)  # says what is wrong
            raise
        self.trust.replace(trusted)
        self.store.distrust(self.document.manifest.compromised_keys)

    def offer(self, source: str, documents: Sequence[bytes]) -> bool:
        """Signed manifest versions from ``source`` (a partner, or the file): adopt the newest
        if the chain from the trusted one verifies. False (a security event) if refused."""
        with self._adopting:
            if self.document is None:
                return False  # trusting a manifest given in code: nothing to verify a chain from
            newest = accept(self.store, self.document, documents, source, dt.datetime.now(dt.UTC))
            if newest is None:
                return False
            try:
                check_own_material(self.config, newest.manifest)
            except ConfigError as error:  # trusted (kept), but this node cannot serve under it
                log.error("manifest version %d: %s", newest.version, error)
            self.document = newest
            self.adopt(newest.manifest)
            if source != FILE:
                self._write_manifest_file(newest)
            return True

    def _write_manifest_file(self, document: SignedManifest) -> None:
        """Keep the manifest file at the version this node trusts (adopted from a partner), so
        that what reads the file (this node's checks before it opens its store, `exchange
        verify`, the operator) sees it too. Atomic; a read-only PKI folder is only logged."""
        path = self.config.manifest_path
        staged = path.with_name(path.name + ".new")
        try:
            staged.write_bytes(document.render())
            os.replace(staged, path)
        except OSError as error:
            log.warning("manifest version %d adopted but not written to %s: %s", document.version, path,
                        error.strerror or error)
            return
        self._file_seen = _stamp(path)

    def _learn_from(self, partner: str, version: int) -> None:
        """A partner pulling from us trusts a newer manifest: fetch it from that partner, in the
        background (the pull it made is served meanwhile), at most once per partner every
        ``LEARN_INTERVAL_SECONDS`` (a partner can't make this node dial it at will), and never
        while the last fetch from it is in flight (a partner that accepts the call and never
        answers would otherwise hold a thread and a call per interval until the deadline)."""
        now = time.monotonic()
        with self._adopting:
            if partner not in self.manifest.active_agencies or partner == self.config.agency \
                    or now - self._learning.get(partner, -LEARN_INTERVAL_SECONDS) < LEARN_INTERVAL_SECONDS:
                return
            self._learners = [t for t in self._learners if t.is_alive()]
            if any(t.name == f"manifest-{partner}" for t in self._learners):
                return
            self._learning[partner] = now
            thread = threading.Thread(target=self._fetch_manifest, args=(partner, version),
                                      name=f"manifest-{partner}", daemon=True)
            self._learners.append(thread)
        thread.start()

    def _fetch_manifest(self, partner: str, version: int) -> None:
        report = PullReport(partner)
        if not self.puller.catch_up(partner, report) and report.error:
            log.warning("manifest version %d from %s not adopted: %s", version, partner, report.error,
                        extra={"peer": partner})

    def check_manifest_file(self) -> bool:
        """Offer the manifest file if it changed since last seen (an operator installed one)."""
        path = self.config.manifest_path
        stamp = _stamp(path)
        if self.document is None or stamp == self._file_seen:
            return False
        self._file_seen = stamp
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if _stamp(path) != stamp:
            self._file_seen = None  # still being written: read it again at the next look
            return False
        try:
            parse_document(data, what=str(path))
        except ConfigError as error:
            # The operator's own file, perhaps caught half-copied: said in the log, not raised as
            # a security event; read again when it changes.
            log.warning("manifest file not read: %s", error)
            return False
        return self.offer(FILE, [data])

    def adopt(self, manifest: Manifest) -> None:
        """Trust ``manifest`` from now on, without a restart.

        Whether ``manifest`` deserves it (signatures, version, expiry) is decided before
        this is called. Here: it must still name this agency; then the swap (every service
        reads the new one from its next call, new handshakes use its CAs), the store stops
        serving what newly compromised keys signed, and holdings are re-evaluated (what
        this node may no longer hold is purged; every peer is flagged for repair).
        """
        if self.config.agency not in manifest.partners:
            raise ConfigError(f"manifest version {manifest.version} does not name {self.config.agency}: not adopted")
        with self._adopting:
            self.trust.replace(manifest)
            self.store.distrust(manifest.compromised_keys)
            self._adopt_manifest()
            if self.schedule is not None:
                for peer in self.peers():  # a partner that joined is pulled from at once
                    self.schedule.add(peer)

    def _adopt_manifest(self) -> None:
        """A changed manifest: drop what we may no longer hold, repair with every peer."""
        manifest = self.manifest
        if not manifest_changed(self.store, manifest.version, [p.agency for p in self.peers()]):
            return
        accreditation = manifest.partner(self.config.agency).accreditation

        def holdable(originator: str, marking: Marking) -> bool:
            return may_hold(agency=self.config.agency, accreditation=accreditation, originator=originator,
                            marking=marking, known_agencies=manifest.agencies).allowed

        dropped = reevaluate_holdings(self.store, holdable)
        log.info("manifest version %d adopted: %d records no longer held; peers flagged for repair",
                 manifest.version, dropped)

    def expiries(self) -> list[Expiry]:
        """When this node's certificate, its CA, its users' certificates and its manifest expire."""
        return expiries(self.config.agency, self.config.agency_dir, list(self.config.users), self.manifest)

    def credentials(self) -> grpc.ServerCredentials:
        # New handshakes ask the current manifest for its CAs (exchange/node/tls.py).
        return self.tls.credentials()

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
        self.searches.start()  # spawned beside the node, if configured; searches run here until one is up
        self.monitor.start()  # health tells the truth about the database from the first call
        self.admission.start()  # the watchdog that cancels stalled and overlong streams
        self.expiry_watch.start()
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
        if self.document is not None:
            self._watcher = threading.Thread(target=self._watch_manifest_file, name="manifest-file", daemon=True)
            self._watcher.start()
        self._warn_if_not_vacuumed()
        log.info("node %s serving on %s", self.config.agency, address)
        return self.port

    def _warn_if_not_vacuumed(self) -> None:
        """PostgreSQL with autovacuum off: statistics and the visibility map go stale after large
        changes (a catch-up pull), and searches slow down until someone vacuums: say so once."""
        if self.store.engine.dialect.name != "postgresql":
            return
        with self.store.engine.connect() as conn:
            setting = conn.exec_driver_sql("SHOW autovacuum").scalar_one()
        if setting != "on":
            log.warning("PostgreSQL runs with autovacuum off: run VACUUM (ANALYZE) on this node's database "
                        "after every large change, or searches slow down (README, PostgreSQL)")

    def _watch_manifest_file(self) -> None:
        """An operator installs a new signed manifest by writing the file: adopted within
        ``manifest_check_seconds`` if it verifies (a refusal is a security event)."""
        while not self._watching.wait(self.manifest_check_seconds):
            try:
                self.check_manifest_file()
            except Exception:  # the watcher never dies; the next change is tried again
                log.exception("reading the manifest file %s failed", self.config.manifest_path)

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
        self._watching.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        self.monitor.stop()
        stopped = self._server.stop(grace) if self._server is not None else None  # no new calls from here
        if self.taxii is not None:
            self.taxii.stop()  # waits for the pages in flight
        if self.schedule is not None:
            self.schedule.stop(timeout=0)  # no new pull starts...
        self.puller.close()  # ...and the one in flight is cancelled at its next batch
        if self.notifier is not None:
            self.notifier.stop()  # a delivery in flight finishes (and is marked) first
        for learner in list(self._learners):  # a manifest fetch in flight fails fast once closed
            learner.join()
        if self.schedule is not None:
            self.schedule.stop()  # waits for that batch's commit
        self.puller.checks.end()  # no pull is in flight now: the check processes are stopped
        if stopped is not None:
            stopped.wait()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # every handler has returned, its transaction ended
            self._executor = None
        self.searches.close()
        self.admission.stop()
        self.expiry_watch.stop()
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
