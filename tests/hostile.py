"""A scripted hostile partner: a real gRPC Sync server that serves whatever a test tells it to.

It listens on the manifest address of the agency it impersonates (normally
KOR-KNPA, whose real node is not started), over mutual TLS with that agency's
node certificate, so the puller's TLS checks pass and the test reaches the
record checks behind them. Started with another certificate, it shows the
puller refusing a server that is not the partner's node.

Each Pull call it receives plays the next script (a list of steps):

- :class:`Batch`: send these envelopes and this cursor;
- :class:`Oversize`: send one PullResponse bigger than a given message limit;
- :class:`Endless`: send batches made by a factory until the call is cancelled;
- :class:`Stall`: send nothing more, keep the call open until it is cancelled;
- :class:`Abort`: end the call with a status (UNAVAILABLE by default) mid-stream.

Calls beyond the scripts end at once with no batch. Digest calls are answered
by :attr:`HostilePartner.digest` (a function of the request; UNIMPLEMENTED if
unset), which may make its answers up as it goes. Every request is recorded
(:attr:`HostilePartner.calls`), so a test can prove which cursor a resumed pull
carried. :class:`Forge` crafts the envelopes: honest records of the
impersonated agency, tampered copies, signatures by the wrong key, and so on.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc

from exchange.node.server import load_signer
from exchange.records.envelope import RECORD_TYPE, WITHDRAWAL_TYPE, Signer, content_hash
from exchange.v1 import records_pb2, sync_pb2
from tests.federation import AGENCIES, Federation
from tests.fill import make_record

PULL_METHOD = "/exchange.v1.SyncService/Pull"

# --- script steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One PullResponse, sent as is."""

    entries: Sequence[records_pb2.Envelope]
    cursor: bytes


@dataclass(frozen=True)
class Oversize:
    """One PullResponse whose serialised size exceeds ``limit`` bytes (what the puller accepts).

    ``entries`` (honest, say) travel in the same message, padded with a junk
    envelope, so a test can show they are lost with the message, not applied.
    """

    limit: int
    entries: Sequence[records_pb2.Envelope] = ()
    cursor: bytes = b"oversize"


@dataclass(frozen=True)
class Endless:
    """Batches ``make(n)`` for n = 0, 1, 2, ... until the call is no longer active."""

    make: Callable[[int], Sequence[records_pb2.Envelope]]
    pause: float = 0.0  # seconds between batches


@dataclass(frozen=True)
class Stall:
    """Keep the call open, sending nothing, until it is cancelled (deadline) or ``seconds`` pass."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Abort:
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    details: str = "hostile partner hangs up mid-stream"


Step = Batch | Oversize | Endless | Stall | Abort
Script = Sequence[Step]


def endless_cursor(n: int) -> bytes:
    return b"endless-%d" % n


@dataclass
class Call:
    """One Pull call the hostile server received."""

    request: sync_pb2.PullRequest
    peer_identities: tuple[bytes, ...]
    sent: list[sync_pb2.PullResponse] = field(default_factory=list)  # batches handed to gRPC to send
    ended: threading.Event = field(default_factory=threading.Event)  # the RPC terminated (any way)


# --- the server --------------------------------------------------------------------------------


class HostilePartner:
    """A real gRPC server speaking Sync.Pull over mutual TLS, playing scripts."""

    def __init__(
        self, federation: Federation, impersonates: str = "KOR-KNPA", *, cert_agency: str | None = None,
        key_pem: bytes | None = None, cert_pem: bytes | None = None,
    ) -> None:
        """Listen on ``impersonates``'s manifest address.

        The server presents ``cert_agency``'s node certificate (by default the
        impersonated agency's own), or the given ``key_pem``/``cert_pem``.
        """
        self.federation = federation
        self.agency = impersonates
        self.address = federation.manifest.partner(impersonates).address
        if key_pem is None or cert_pem is None:
            base = federation.pki_dir / (cert_agency or impersonates)
            key_pem, cert_pem = (base / "node.key").read_bytes(), (base / "node.crt").read_bytes()
        self._key_pem, self._cert_pem = key_pem, cert_pem
        self._scripts: list[Script] = []
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.digest: Callable[[sync_pb2.DigestRequest], sync_pb2.DigestResponse] | None = None
        self.digests: list[sync_pb2.DigestRequest] = []
        # PullSightings answers, one per call in order; past the end, an empty last batch.
        self.sightings: list[sync_pb2.PullSightingsResponse] = []
        self.sighting_calls: list[sync_pb2.PullSightingsRequest] = []
        self._stopping = threading.Event()
        self._server: grpc.Server | None = None

    # scripts ------------------------------------------------------------------------------------

    def play(self, *scripts: Script) -> HostilePartner:
        """Queue one script per coming Pull call."""
        with self._lock:
            self._scripts.extend(list(s) for s in scripts)
        return self

    def _next_script(self) -> Script:
        with self._lock:
            return self._scripts.pop(0) if self._scripts else []

    # lifecycle ----------------------------------------------------------------------------------

    def start(self) -> HostilePartner:
        roots = "".join(p.ca_cert_pem for p in self.federation.manifest.partners.values()).encode("ascii")
        credentials = grpc.ssl_server_credentials(
            [(self._key_pem, self._cert_pem)], root_certificates=roots, require_client_auth=True
        )
        handler = grpc.method_handlers_generic_handler("exchange.v1.SyncService", {
            "Pull": grpc.unary_stream_rpc_method_handler(
                self._pull,
                request_deserializer=sync_pb2.PullRequest.FromString,
                response_serializer=sync_pb2.PullResponse.SerializeToString,
            ),
            "Digest": grpc.unary_unary_rpc_method_handler(
                self._digest,
                request_deserializer=sync_pb2.DigestRequest.FromString,
                response_serializer=sync_pb2.DigestResponse.SerializeToString,
            ),
            "PullSightings": grpc.unary_unary_rpc_method_handler(
                self._pull_sightings,
                request_deserializer=sync_pb2.PullSightingsRequest.FromString,
                response_serializer=sync_pb2.PullSightingsResponse.SerializeToString,
            ),
        })
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="hostile"),
            handlers=[handler],
            options=[
                ("grpc.max_send_message_length", -1),  # the hostile side sends whatever it likes
                ("grpc.max_receive_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        if server.add_secure_port(self.address, credentials) == 0:
            raise RuntimeError(f"hostile partner cannot listen on {self.address}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True when every call received so far has terminated."""
        deadline = time.monotonic() + timeout
        return all(call.ended.wait(max(0.0, deadline - time.monotonic())) for call in list(self.calls))

    # the handler --------------------------------------------------------------------------------

    def _pull(self, request: sync_pb2.PullRequest, context: grpc.ServicerContext) -> Iterator[sync_pb2.PullResponse]:
        call = Call(request, tuple(context.peer_identities() or ()))
        context.add_callback(call.ended.set)
        with self._lock:
            self.calls.append(call)
        script = self._next_script()
        for step in script:
            if isinstance(step, Batch):
                yield self._send(call, sync_pb2.PullResponse(entries=list(step.entries), cursor=step.cursor))
            elif isinstance(step, Oversize):
                yield self._send(call, oversize_batch(step))
            elif isinstance(step, Endless):
                n = 0
                while context.is_active() and not self._stopping.is_set():
                    yield self._send(call, sync_pb2.PullResponse(entries=list(step.make(n)), cursor=endless_cursor(n)))
                    n += 1
                    if step.pause:
                        time.sleep(step.pause)
                return
            elif isinstance(step, Stall):
                deadline = time.monotonic() + step.seconds
                while context.is_active() and not self._stopping.is_set() and time.monotonic() < deadline:
                    time.sleep(0.02)
                return
            elif isinstance(step, Abort):
                context.abort(step.code, step.details)

    def _digest(self, request: sync_pb2.DigestRequest, context: grpc.ServicerContext) -> sync_pb2.DigestResponse:
        with self._lock:
            self.digests.append(request)
        answer = self.digest
        if answer is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this hostile partner answers no digests")
        return answer(request)

    def _pull_sightings(
        self, request: sync_pb2.PullSightingsRequest, context: grpc.ServicerContext
    ) -> sync_pb2.PullSightingsResponse:
        with self._lock:
            self.sighting_calls.append(request)
            return self.sightings.pop(0) if self.sightings else sync_pb2.PullSightingsResponse(cursor=request.cursor)

    @staticmethod
    def _send(call: Call, batch: sync_pb2.PullResponse) -> sync_pb2.PullResponse:
        call.sent.append(batch)
        return batch


def oversize_batch(step: Oversize) -> sync_pb2.PullResponse:
    padding = records_pb2.Envelope(
        payload_type=RECORD_TYPE, payload=b"\x00" * (step.limit + 1024), key_id="KOR-KNPA/padding",
        signature=b"\x00" * 64,
    )
    batch = sync_pb2.PullResponse(entries=[*step.entries, padding], cursor=step.cursor)
    assert batch.ByteSize() > step.limit
    return batch


# --- crafting envelopes ------------------------------------------------------------------------


def marking(classification: str = "CONFIDENTIAL", releasable_to: Sequence[str] = ("JPN-NPA", "USA-DTSF"),
            tlp: str = "GREEN", caveats: Sequence[str] = ()) -> records_pb2.Marking:
    return records_pb2.Marking(classification=classification, releasable_to=list(releasable_to), tlp=tlp,
                               caveats=list(caveats))


class Forge:
    """Makes records and envelopes as the impersonated agency (or anyone whose key the PKI holds)."""

    def __init__(self, federation: Federation, agency: str = "KOR-KNPA") -> None:
        self.agency = agency
        self.manifest = federation.manifest
        self.signers: dict[str, Signer] = {
            a: load_signer(a, federation.pki_dir / a / "signing.key", federation.manifest) for a in AGENCIES
        }
        self._count = 0

    def record(
        self, *, ref: records_pb2.RecordRef | None = None, record_id: str | None = None,
        originator: str | None = None, version: int = 1, title: str | None = None,
        mark: records_pb2.Marking | None = None,
    ) -> records_pb2.Record:
        """A record of the impersonated agency (by default a fresh one, version 1)."""
        self._count += 1
        record = make_record(self.agency, self._count, mark or marking())
        if ref is not None:
            record.ref.CopyFrom(ref)
        if record_id is not None:
            record.ref.record_id = record_id
        if originator is not None:
            record.ref.originator = originator
        record.version = version
        if title is not None:
            record.content.title = title
        return record

    def seal(self, record: records_pb2.Record | bytes, *, by: str | None = None, key_id: str | None = None,
             payload_type: str = RECORD_TYPE) -> records_pb2.Envelope:
        """Serialise once and sign with ``by``'s key (default: the impersonated agency)."""
        payload = record if isinstance(record, bytes) else record.SerializeToString()
        envelope = self.signers[by or self.agency].seal(payload_type, payload)
        if key_id is not None:
            envelope.key_id = key_id
        return envelope

    def honest(self, **overrides: Any) -> records_pb2.Envelope:
        """A record of the impersonated agency, signed with its key (``overrides`` as for :meth:`record`)."""
        return self.seal(self.record(**overrides))

    def honest_many(self, count: int) -> list[records_pb2.Envelope]:
        return [self.honest() for _ in range(count)]

    def withdrawal(self, ref: records_pb2.RecordRef, version: int, *, by: str | None = None
                   ) -> records_pb2.Envelope:
        message = records_pb2.Withdrawal(ref=ref, version=version)
        return self.seal(message.SerializeToString(), by=by, payload_type=WITHDRAWAL_TYPE)


def tampered(envelope: records_pb2.Envelope) -> records_pb2.Envelope:
    """A copy with one payload byte changed after signing; it still parses as a record."""
    copy = records_pb2.Envelope()
    copy.CopyFrom(envelope)
    payload = bytearray(copy.payload)
    at = bytes(payload).find(b"LLC")
    assert at >= 0, "make_record's company name is the byte we flip"
    payload[at + 2] ^= 0x01  # "LLC" -> "LLB": the same length, still a valid record
    copy.payload = bytes(payload)
    records_pb2.Record.FromString(copy.payload)
    return copy


def retyped(envelope: records_pb2.Envelope, payload_type: str) -> records_pb2.Envelope:
    """The same payload and signature presented under another payload type (a PAE replay)."""
    return records_pb2.Envelope(
        payload_type=payload_type, payload=envelope.payload, key_id=envelope.key_id, signature=envelope.signature
    )


def record_of(envelope: records_pb2.Envelope) -> records_pb2.Record:
    return records_pb2.Record.FromString(envelope.payload)


def ref_of(envelope: records_pb2.Envelope) -> tuple[str, str]:
    ref = record_of(envelope).ref
    return ref.originator, ref.record_id


def hash_of(envelope: records_pb2.Envelope) -> bytes:
    return content_hash(envelope.payload)


def fresh_id() -> str:
    return str(uuid.uuid4())


__all__ = [
    "PULL_METHOD", "Abort", "Batch", "Call", "Endless", "Forge", "HostilePartner", "Oversize", "Script", "Stall",
    "Step", "endless_cursor", "fresh_id", "hash_of", "marking", "record_of", "ref_of", "retyped", "tampered",
]

