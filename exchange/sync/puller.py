"""Pulling from one partner: trust only its CA, verify every entry, apply batch by batch.

The checks of batch k+1 (signature, rules, decisions: ``exchange.sync.verifier``) run while
batch k is written: a worker thread hands them to check processes (``exchange.sync.checkpool``),
so the checks and the writing each have a core. Each batch and the cursor after it commit in
one transaction (``store.received``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import grpc

from exchange import logs
from exchange.config import Limits
from exchange.core.manifest import Manifest
from exchange.core.trust import Trust
from exchange.errors import ConfigError, clip
from exchange.observe import NO_METRICS, Metrics
from exchange.store import Store
from exchange.store.peers import note_pull, peer_cursor, peer_needs_repair, received_from
from exchange.store.received import Incoming, apply_batch
from exchange.store.refusals import Refusal, RefusalTally
from exchange.sync.checkpool import CheckPool
from exchange.sync.repair import repair
from exchange.sync.report import Progress, PullReport
from exchange.sync.sightings import pull_sightings
from exchange.sync.verifier import Verifier
from exchange.v1 import records_pb2, sync_pb2, sync_pb2_grpc

log = logging.getLogger("exchange.sync")

# The checks of batch k+1 overlap the write of batch k only if the thread waiting on the
# check processes (or, for a small batch, checking itself) gets the GIL back promptly. With
# CPython's default switch interval (5 ms) it can wait that long behind the writing thread's
# Python for every single record, and the two threads barely overlap (the pull ran at about
# one core). A shorter interval makes that hand-off prompt; it is process-wide, so a node that
# pulls lowers it (never raises it) once, when its puller is made.
SWITCH_INTERVAL_SECONDS = 0.0005

NEWER_MANIFEST = "newer manifest:"  # how a partner's FAILED_PRECONDITION says ours is older

_CLOSED_UNDER_CALL = ("the connection was closed as a call started (the node is stopping, its certificate "
                      "was renewed or the partner's entry changed); the next pull connects afresh")


def _closed_under_call(error: ValueError) -> bool:
    """gRPC's refusal to start a call on a channel closed since its stub was taken (``stub``):
    "Cannot invoke RPC on closed channel!" or "Cannot invoke RPC: Channel closed!"."""
    return str(error).startswith("Cannot invoke RPC")


class _Link(NamedTuple):
    channel: grpc.Channel
    stub: sync_pb2_grpc.SyncServiceStub
    source: tuple[str, str]  # the peer's (address, CA certificate) in the manifest they were made from


class _Closed(grpc.RpcError):
    """Raised instead of starting a call once the puller is closed: the node is stopping."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.CANCELLED

    def details(self) -> str:
        return "the node is stopping"


class Puller:
    def __init__(
        self, *, agency: str, trust: Trust, store: Store, node_key: bytes, node_cert: bytes,
        limits: Limits, metrics: Metrics = NO_METRICS,
    ) -> None:
        self.agency = agency
        self.trust = trust  # read at every call: the manifest may be replaced while the node runs
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.verifier = Verifier(agency, trust, limits)
        self.checks = CheckPool(self.verifier, agency, trust, limits)
        if sys.getswitchinterval() > SWITCH_INTERVAL_SECONDS:
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self._key, self._cert = node_key, node_cert
        # peer -> its channel and stub, and the peer's (address, CA) in the manifest they were made from
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._repaired_at: dict[str, float] = {}  # peer -> time.monotonic() of its last repair
        # Asked between batches: a replica that lost the schedule's election stops pulling at
        # the next batch boundary (what it holds is applied with its cursor), so the new
        # leader and the old one overlap by at most a batch. The schedule sets it.
        self.may_continue: Callable[[], bool] = lambda: True
        # Set by a node that trusts a signed manifest (exchange/node/server.py): offered the
        # documents a partner serves (GetManifest) when it says ours is older; True if it
        # adopted a newer one. None: pulls do not state a manifest version.
        self.adopt_manifests: Callable[[str, list[bytes]], bool] | None = None

    def use_certificate(self, key: bytes, cert: bytes) -> None:
        """Present this key and certificate from the next pull on (a renewed node certificate):
        channels made with the old ones are closed and made again when next needed."""
        with self._lock:
            self._key, self._cert = key, cert
            for link in self._links.values():
                link.channel.close()
            self._links.clear()

    def stub(self, peer: str) -> sync_pb2_grpc.SyncServiceStub:
        """The stub of a channel that trusts only ``peer``'s CA and checks the server is
        ``peer``'s node.

        The stub is made with its channel, under the lock that closing takes: gRPC registers
        a stub's methods on the channel's core object, and registering on a channel another
        thread has closed is a use after free (a segfault, grpcio 1.85). A call through a stub
        whose channel was closed since is refused by gRPC with a ValueError, which ``pull`` and
        ``catch_up`` report as their error (``_closed_under_call``)."""
        if peer == self.agency:
            raise ConfigError(f"{peer} is this node's own agency")
        with self._lock:
            if self._closed:
                raise _Closed()
            partner = self.manifest.partner(peer)
            made = self._links.get(peer)
            if made is not None and made.source == (partner.address, partner.ca_cert_pem):
                return made.stub
            # None yet, or the manifest changed the peer's CA or address: a channel made from
            # the old entry would trust the old CA, so it is replaced (the old one closed).
            if made is not None:
                made.channel.close()
            # The node's own key and certificate as read at start (a renewed node certificate
            # is picked up here when it is passed in afresh: exchange/node/tls.py).
            credentials = grpc.ssl_channel_credentials(
                root_certificates=partner.ca_cert_pem.encode("ascii"),
                private_key=self._key,
                certificate_chain=self._cert,
            )
            channel = grpc.secure_channel(partner.address, credentials, options=[
                # The server must present a certificate for <peer>.node.exchange
                # issued by the peer's CA: only that agency's node has one.
                ("grpc.ssl_target_name_override", partner.server_name),
                ("grpc.max_receive_message_length", self.limits.max_message_bytes),
                ("grpc.max_send_message_length", self.limits.max_message_bytes),
            ])
            link = _Link(channel, sync_pb2_grpc.SyncServiceStub(channel),  # type: ignore[no-untyped-call]
                         (partner.address, partner.ca_cert_pem))
            self._links[peer] = link
            return link.stub

    def _forget(self, peer: str) -> None:
        with self._lock:
            made = self._links.pop(peer, None)
            if made is not None:
                made.channel.close()

    def close(self) -> None:
        """Stop pulling: calls in flight are cancelled (a pull applies the batches it has fully
        received, each with its cursor, and ends), and no new call starts."""
        with self._lock:
            self._closed = True
            for link in self._links.values():
                link.channel.close()
            self._links.clear()
        self.checks.close()

    @property
    def manifest(self) -> Manifest:
        return self.trust.manifest

    def pull(self, peer: str, *, progress: Progress | None = None) -> PullReport:
        """Pull everything new from ``peer`` once.

        Repair by digest instead of pulling from the start when the cursor is
        refused as stale, when it was lost while we already hold records, or
        after a manifest change flagged the peer.
        """
        with logs.bound(peer=peer):  # every line logged during the pull names the partner
            report = self._pull_once(peer, progress)
        self.metrics.pull_finished(peer, ok=not report.error, at=time.time())
        return report

    def _pull_once(self, peer: str, progress: Progress | None) -> PullReport:
        started = time.monotonic()
        report = PullReport(peer, tally=RefusalTally(self.limits))
        if peer not in self.manifest.active_agencies:  # removed by a manifest adopted since it was scheduled
            report.error = f"{peer} is not in the federation manifest (version {self.manifest.version})"
            return report
        try:
            cursor, needs_repair = peer_cursor(self.store, peer), peer_needs_repair(self.store, peer)
            if needs_repair or (not cursor and received_from(self.store, peer)):
                self._repair(peer, report, progress)
            else:
                self._pull(peer, cursor, report, progress)
                if report.stale_cursor:
                    self._repair(peer, report, progress)
            if not report.error and not self._closed:
                self._pull_sightings(peer, report)
        except ValueError as error:
            if not _closed_under_call(error):
                raise
            report.error = report.error or _CLOSED_UNDER_CALL  # what was applied before stays, with its cursor
        note_pull(self.store, peer, report.error or None)
        report.seconds = time.monotonic() - started
        log.info("pull from %s: received %d, stored %d, refused %d, %.0f ms%s", peer, report.received,
                 report.applied.stored, report.applied.refused, report.seconds * 1000,
                 f"; error: {report.error}" if report.error else "", extra=report.fields())
        return report

    def _pull_sightings(self, peer: str, report: PullReport) -> None:
        """The partner's sightings (exchange/sync/sightings.py), after its log: a sighting is
        accepted only on a record this node holds, so records first."""
        try:
            sightings = pull_sightings(self.stub(peer), self.store, self.manifest, self.limits, peer)
        except _Closed:
            return
        report.sightings = sightings.stored
        if sightings.error:
            report.error = f"sightings: {sightings.error}"

    def _pull(
        self, peer: str, cursor: bytes, report: PullReport, progress: Progress | None, *, caught_up: bool = False,
    ) -> None:
        request = sync_pb2.PullRequest(cursor=cursor, max_entries=self.limits.pull_batch_entries,
                                       manifest_version=self.manifest.version if self.adopt_manifests else 0)
        try:
            self.stream(peer, request, report, progress, save_cursor=True)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.FAILED_PRECONDITION and (error.details() or "").startswith(NEWER_MANIFEST):
                # The partner trusts a newer manifest: fetch, verify, adopt, then pull again (once).
                if not caught_up and self.catch_up(peer, report):
                    self._pull(peer, peer_cursor(self.store, peer), report, progress, caught_up=True)
                elif not report.error:
                    report.error = f"{peer} trusts a newer manifest this node did not adopt: " \
                                   f"{clip(error.details(), 300)}"
            elif code == grpc.StatusCode.FAILED_PRECONDITION:
                report.stale_cursor = True
            elif code == grpc.StatusCode.INVALID_ARGUMENT and cursor:
                # A cursor the peer cannot open (damaged or planted in our database, or sealed
                # under a key the peer no longer has) would be refused on every retry, and the
                # records only the originator serves (ORCON, TLP:RED) would never arrive: it is
                # repaired like a stale one. The request holds nothing else the peer could refuse.
                log.warning("%s refused our cursor (%s); repairing by digest", peer, clip(error.details()),
                            extra={"peer": peer})
                report.stale_cursor = True
            else:
                report.error = f"{code.name}: {clip(error.details(), 300)}"  # the partner's words: logged, stored
            if code == grpc.StatusCode.UNAVAILABLE:
                self._forget(peer)  # the schedule backs off; the next try connects afresh

    def catch_up(self, peer: str, report: PullReport) -> bool:
        """Fetch the manifest versions ``peer`` trusts above ours and offer them for adoption."""
        if self.adopt_manifests is None:
            return False
        have = self.manifest.version
        try:
            response = self.stub(peer).GetManifest(sync_pb2.GetManifestRequest(have_version=have),
                                                   timeout=self.limits.pull_deadline_seconds)
        except grpc.RpcError as error:
            report.error = f"GetManifest: {error.code().name}: {clip(error.details(), 300)}"
            return False
        except ValueError as error:
            if not _closed_under_call(error):
                raise
            report.error = f"GetManifest: {_CLOSED_UNDER_CALL}"
            return False
        adopted = self.adopt_manifests(peer, list(response.documents))
        if not adopted:
            report.error = f"{peer}'s manifest versions above {have} were refused (see exchange events)"
        return adopted

    def _repair(self, peer: str, report: PullReport, progress: Progress | None) -> None:
        if not self._may_repair(peer, report):
            return
        repair(self, peer, report, progress=progress)
        if report.repaired:
            # Entries appended after the digest are pulled now, from the digest's cursor.
            self._pull(peer, peer_cursor(self.store, peer), report, progress)

    def _may_repair(self, peer: str, report: PullReport) -> bool:
        """At most one repair per partner every ``repair_interval_seconds``: a partner that
        answers every pull with FAILED_PRECONDITION can't make this node bisect its digests
        over and over. A postponed repair is an error (the schedule backs off); the stale
        cursor or the repair flag is still there for the pull that may repair."""
        now = time.monotonic()
        with self._lock:
            last = self._repaired_at.get(peer)
            interval = self.limits.repair_interval_seconds
            if last is not None and now - last < interval:
                report.error = (f"repair postponed: the last repair from {peer} was {now - last:.0f} s ago "
                                f"(at most one every {interval} s)")
                return False
            self._repaired_at[peer] = now
        return True

    def stream(
        self, peer: str, request: sync_pb2.PullRequest, report: PullReport, progress: Progress | None,
        *, save_cursor: bool,
    ) -> None:
        call = self.stub(peer).Pull(request, timeout=self.limits.pull_deadline_seconds)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"verify-{peer}") as pool:
            pending: tuple[Future[list[Incoming | Refusal]], bytes] | None = None
            try:
                max_batches = self.limits.pull_max_entries // max(1, self.limits.pull_batch_entries) + 2
                for batch in _bounded(call, self.limits.pull_max_entries, max_batches, report):
                    verified = pool.submit(self._verify, list(batch.entries), peer)
                    if pending is not None:
                        previous, pending = pending, None  # never applied twice, even if it fails
                        self._apply(peer, previous, report, progress, save_cursor)
                    pending = (verified, batch.cursor)
                    if not self.may_continue():
                        report.truncated = True  # not an error: whoever pulls next resumes here
                        call.cancel()
                        break
            finally:
                # A batch fully received before a failure is still applied.
                if pending is not None:
                    self._apply(peer, pending, report, progress, save_cursor)

    def _verify(self, entries: list[records_pb2.Envelope], peer: str) -> list[Incoming | Refusal]:
        return self.checks.check(entries, peer)

    def _apply(
        self, peer: str, pending: tuple[Future[list[Incoming | Refusal]], bytes], report: PullReport,
        progress: Progress | None, save_cursor: bool,
    ) -> None:
        entries = pending[0].result()
        applied = apply_batch(self.store, peer, entries, pending[1] if save_cursor else None, tally=report.tally,
                              supersedes=self.manifest.supersedes)
        self.metrics.entries_rejected(peer, applied.events)  # counted once committed
        report.add(applied)
        report.received += len(entries)
        report.batches += 1
        if progress is not None:
            progress(report.received)


def _bounded(
    call: Iterator[sync_pb2.PullResponse], limit: int, max_batches: int, report: PullReport
) -> Iterator[sync_pb2.PullResponse]:
    """Stop reading a stream after ``limit`` entries or ``max_batches`` batches: an endless
    stream (of entries, or of empty batches) ends here."""
    count = 0
    for batches, batch in enumerate(call, start=1):
        yield batch
        count += len(batch.entries)
        if count >= limit or batches >= max_batches:
            report.truncated = True  # not an error: the next pull resumes from the cursor
            call.cancel()  # type: ignore[attr-defined]
            return
