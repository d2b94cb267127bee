"""Every RPC enters through here: deserialise, authenticate, authorise, map errors.

Services register plain functions ``fn(request, principal) -> response``; the
guard derives the principal from the verified certificate (never from the
request), checks the caller's role against :data:`ROLES` (docs/design.md's table;
anything not listed is denied), and turns Exchange errors into gRPC statuses.
It also logs one line per call (method, status, duration; the caller's
identity is on every line logged during the call) and times it for metrics.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from exchange import logs
from exchange.core.identity import Principal, Role
from exchange.errors import (
    Conflict,
    ExchangeError,
    IdentityError,
    InvalidInput,
    ManifestBehind,
    ManifestChanged,
    NotFound,
    Overloaded,
    PermissionDenied,
    StaleCursor,
    TooLarge,
    VerificationError,
    clip,
)
from exchange.node.admission import Admission
from exchange.node.auth import Authenticator
from exchange.observe import NO_METRICS, Metrics

log = logging.getLogger("exchange.node")

# Whether the current streaming call's client is still connected (True outside a call).
call_active: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "call_active", default=lambda: True
)
MAX_STATUS_CHARS = 512  # characters of a status message at most
access = logging.getLogger("exchange.rpc")  # one line per call: filter or route it on its own

USERS = frozenset({Role.ANALYST, Role.LIAISON})
ANYONE = frozenset(Role)

# docs/design.md "Actors and identities": who may call what. Deny by default.
ROLES: Mapping[str, frozenset[Role]] = {
    "/exchange.v1.SubmissionService/Submit": frozenset({Role.ANALYST}),
    "/exchange.v1.SubmissionService/SubmitBulk": frozenset({Role.ANALYST}),
    "/exchange.v1.SubmissionService/Revise": frozenset({Role.ANALYST}),
    "/exchange.v1.SubmissionService/Retract": frozenset({Role.ANALYST}),
    "/exchange.v1.QueryService/Get": USERS,
    "/exchange.v1.QueryService/Search": USERS,
    "/exchange.v1.LiaisonService/Disclosures": frozenset({Role.LIAISON}),  # docs/design.md: liaison officers
    # The watch list is the liaison officer's tool (exchange/node/liaison.py).
    "/exchange.v1.LiaisonService/WatchAdd": frozenset({Role.LIAISON}),
    "/exchange.v1.LiaisonService/WatchRemove": frozenset({Role.LIAISON}),
    "/exchange.v1.LiaisonService/WatchList": frozenset({Role.LIAISON}),
    "/exchange.v1.LiaisonService/WatchHits": frozenset({Role.LIAISON}),
    # Release review (exchange/node/review.py): analysts see their own drafts; disclosure
    # officers review the agency's. Approving is the officer's alone.
    "/exchange.v1.ReviewService/ListDrafts": frozenset({Role.ANALYST, Role.DISCLOSURE_OFFICER}),
    "/exchange.v1.ReviewService/GetDraft": frozenset({Role.ANALYST, Role.DISCLOSURE_OFFICER}),
    "/exchange.v1.ReviewService/ApproveDraft": frozenset({Role.DISCLOSURE_OFFICER}),
    "/exchange.v1.ReviewService/RejectDraft": frozenset({Role.DISCLOSURE_OFFICER}),
    "/exchange.v1.LiaisonService/WatchSeen": frozenset({Role.LIAISON}),
    # Feedback on partners' records (exchange/node/sightings.py): analysts and liaison officers.
    "/exchange.v1.LiaisonService/ReportSighting": USERS,
    "/exchange.v1.LiaisonService/Sightings": USERS,
    "/exchange.v1.SyncService/Pull": frozenset({Role.NODE}),
    "/exchange.v1.SyncService/Digest": frozenset({Role.NODE}),
    "/exchange.v1.SyncService/PullSightings": frozenset({Role.NODE}),
    "/exchange.v1.SyncService/GetManifest": frozenset({Role.NODE}),  # signed, public to partners
    # Operational: any authenticated federation identity may ask if the node is up, and so
    # may the node's operator with the node's own certificate (`exchange health`).
    "/grpc.health.v1.Health/Check": ANYONE,
    "/grpc.health.v1.Health/Watch": ANYONE,
    # Server reflection (exchange/node/reflection.py): service and message descriptors, no data.
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": ANYONE,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANYONE,
}

_STATUS: tuple[tuple[type[ExchangeError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (VerificationError, grpc.StatusCode.INVALID_ARGUMENT),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (IdentityError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ABORTED),
    (StaleCursor, grpc.StatusCode.FAILED_PRECONDITION),
    (ManifestBehind, grpc.StatusCode.FAILED_PRECONDITION),
    (ManifestChanged, grpc.StatusCode.ABORTED),
)


def status_for(error: ExchangeError) -> grpc.StatusCode:
    for kind, code in _STATUS:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


@dataclass(frozen=True)
class _Malformed:
    """A request that could not be parsed; the handler answers INVALID_ARGUMENT."""

    problem: str


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def find_invalid_utf8(descriptor: Any, data: bytes, prefix: str = "") -> str | None:
    """The path of the first string field holding invalid UTF-8, walking the wire format.

    protobuf refuses the whole message without saying which field; people need the field.
    """
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + length], pos + length
                field = descriptor.fields_by_number.get(number)
                if field is None:
                    continue
                name: str = prefix + field.name
                if field.type == FieldDescriptor.TYPE_STRING:
                    try:
                        chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        return name
                elif field.type == FieldDescriptor.TYPE_MESSAGE:
                    found = find_invalid_utf8(field.message_type, chunk, name + ".")
                    if found:
                        return found
            else:
                return None
    except (IndexError, ValueError):
        return None
    return None


def _deserializer(message_type: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def parse(data: bytes) -> Message | _Malformed:
        try:
            return message_type.FromString(data)
        except DecodeError:
            field = find_invalid_utf8(message_type.DESCRIPTOR, data)
            if field:
                return _Malformed(f"{field}: invalid UTF-8")
            return _Malformed("request is not a valid protobuf message")

    return parse


def _cert_pem(context: grpc.ServicerContext) -> bytes | None:
    values = context.auth_context().get("x509_pem_cert")
    return bytes(values[0]) if values else None


@dataclass
class _Call:
    """One RPC as the guard sees it; logged and measured once, when it ends."""

    who: str = "unauthenticated"
    cert: bytes = b""  # the verified client certificate (PEM), re-checked while a stream runs
    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""  # why it was refused, safe to log


def _reason(error: ExchangeError) -> str:
    # A malformed-input message may quote the offending value, which is record content
    # (possibly classified): the log names the field only.
    if isinstance(error, InvalidInput):
        return f"invalid {error.field}" if error.field else "malformed request"
    return " ".join(str(error).split())[:300]


def _well_formed(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, _Malformed):
            raise InvalidInput("", request.problem)
        yield request


class Guard:
    """Authenticates and authorises a call, maps errors to statuses, and logs and times every
    call: one INFO line per RPC (method, status, duration, caller) and a latency histogram."""

    def __init__(self, authenticator: Authenticator, admission: Admission, metrics: Metrics = NO_METRICS) -> None:
        self._authenticator = authenticator
        self._admission = admission  # fair serving: bounds per caller, the stream watchdog
        self._metrics = metrics

    def admit(self, method: str, context: grpc.ServicerContext, call: _Call | None = None) -> Principal:
        cert = _cert_pem(context)
        if call is not None and cert:
            call.cert = cert
            # Established (or refused) before authorisation, so a denial names the caller.
            call.who = self._authenticator.identity(cert).uri
        principal = self._authenticator.principal(cert)
        allowed = ROLES.get(method, frozenset())
        if principal.role not in allowed:
            raise PermissionDenied(f"{principal.role.value} may not call {method.rsplit('/', 1)[-1]}")
        return principal

    @contextmanager
    def _observe(self, method: str, context: grpc.ServicerContext) -> Iterator[_Call]:
        """Map an error to a status and abort with it; log and measure the call either way."""
        call = _Call()
        started = time.monotonic()
        status: tuple[grpc.StatusCode, str] | None = None
        with logs.bound(client=context.peer()):
            try:
                yield call
            except GeneratorExit:  # a stream the client cancelled, or the server is stopping
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as error:  # mapped to a status; nothing escapes unlogged
                if isinstance(error, ExchangeError):
                    # Messages quote request values (each clipped where it is quoted): the
                    # whole is bounded too, so no caller can make the node send back a megabyte.
                    status = (status_for(error), clip(str(error), MAX_STATUS_CHARS))
                    call.reason = _reason(error)
                else:
                    log.exception("internal error in %s for %s", method, call.who, extra={"identity": call.who})
                    status = (grpc.StatusCode.INTERNAL, "internal error")
                call.code = status[0]
            finally:
                self._finished(method, call, time.monotonic() - started)
            if status is not None:
                context.abort(*status)

    def _finished(self, method: str, call: _Call, seconds: float) -> None:
        name = method.lstrip("/")
        self._metrics.rpc_finished(name, call.code.name, seconds)
        fields: dict[str, Any] = {"identity": call.who, "method": name, "code": call.code.name,
                                  "duration_ms": round(seconds * 1000, 1)}
        if call.reason:
            fields["reason"] = call.reason
        access.info("%s %s %.1f ms", name, call.code.name, seconds * 1000, extra=fields)

    def unary(self, method: str, fn: Callable[[Any, Principal], Message]) -> Callable[[Any, Any], Message]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Message:
            with self._observe(method, context) as call:
                principal = self.admit(method, context, call)
                if isinstance(request, _Malformed):
                    raise InvalidInput("", request.problem)
                with (logs.bound(identity=call.who),
                      self._admission.call(method, principal, request, context, call.cert)):
                    return fn(request, principal)
            raise AssertionError("unreachable: the guard aborts every failed call")

        return behaviour

    def stream(
        self, method: str, fn: Callable[[Any, Principal], Iterator[Message]]
    ) -> Callable[[Any, Any], Iterator[Message]]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
            with self._observe(method, context) as call:
                principal = self.admit(method, context, call)
                if isinstance(request, _Malformed):
                    raise InvalidInput("", request.problem)
                # A long-lived stream (health Watch) asks whether its client is still there.
                token = call_active.set(context.is_active)
                try:
                    with (logs.bound(identity=call.who),
                          self._admission.call(method, principal, request, context, call.cert) as ticket):
                        yield from ticket.watch(fn(request, principal))
                finally:
                    call_active.reset(token)

        return behaviour

    def bidi(
        self, method: str, fn: Callable[[Iterator[Any], Principal], Iterator[Message]]
    ) -> Callable[[Iterator[Any], Any], Iterator[Message]]:
        """A stream of requests answered by a stream (server reflection)."""

        def behaviour(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Message]:
            with self._observe(method, context) as call:
                principal = self.admit(method, context, call)
                with (logs.bound(identity=call.who),
                      self._admission.call(method, principal, None, context, call.cert) as ticket):
                    yield from ticket.watch(fn(_well_formed(requests), principal))

        return behaviour


@dataclass(frozen=True)
class Method:
    name: str  # e.g. "Submit"
    request_type: type[Message]
    fn: Callable[[Any, Principal], Any]
    streaming: bool = False
    client_streaming: bool = False  # with streaming: fn takes an iterator of requests (bidirectional)


def service_handler(guard: Guard, service: str, methods: list[Method]) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler for ``service`` whose every method passes through ``guard``."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for m in methods:
        full = f"/{service}/{m.name}"
        if full not in ROLES:
            raise AssertionError(f"{full} has no entry in the role table")
        if m.streaming and m.client_streaming:
            handlers[m.name] = grpc.stream_stream_rpc_method_handler(
                guard.bidi(full, m.fn),
                request_deserializer=_deserializer(m.request_type),
                response_serializer=_serialize,
            )
        elif m.streaming:
            handlers[m.name] = grpc.unary_stream_rpc_method_handler(
                guard.stream(full, m.fn),
                request_deserializer=_deserializer(m.request_type),
                response_serializer=_serialize,
            )
        else:
            handlers[m.name] = grpc.unary_unary_rpc_method_handler(
                guard.unary(full, m.fn),
                request_deserializer=_deserializer(m.request_type),
                response_serializer=_serialize,
            )
    return grpc.method_handlers_generic_handler(service, handlers)


def _serialize(message: Message | bytes) -> bytes:
    """A response; one a service already serialised (``bytes``) goes out as it is."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()
