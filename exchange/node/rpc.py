"""Every RPC enters through here: deserialise, authenticate, authorise, map errors.

Services register plain functions ``fn(request, principal) -> response``; the
guard derives the principal from the verified certificate (never from the
request), checks the caller's role against :data:`ROLES` (DESIGN.md's table;
anything not listed is denied), and turns Exchange errors into gRPC statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from exchange.core.identity import Principal, Role
from exchange.errors import (
    Conflict,
    ExchangeError,
    IdentityError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StaleCursor,
    TooLarge,
    VerificationError,
)
from exchange.node.auth import Authenticator

log = logging.getLogger("exchange.node")

USERS = frozenset({Role.ANALYST, Role.LIAISON})
ANYONE = frozenset(Role)

# DESIGN.md "Actors and identities": who may call what. Deny by default.
ROLES: Mapping[str, frozenset[Role]] = {
    "/exchange.v1.Submission/Submit": frozenset({Role.ANALYST}),
    "/exchange.v1.Submission/Revise": frozenset({Role.ANALYST}),
    "/exchange.v1.Submission/Retract": frozenset({Role.ANALYST}),
    "/exchange.v1.Query/Get": USERS,
    "/exchange.v1.Query/Search": USERS,
    "/exchange.v1.Sync/Pull": frozenset({Role.NODE}),
    "/exchange.v1.Sync/Digest": frozenset({Role.NODE}),
    # Operational: any authenticated federation identity may ask if the node is up.
    "/grpc.health.v1.Health/Check": ANYONE,
    "/grpc.health.v1.Health/Watch": ANYONE,
}

_STATUS: tuple[tuple[type[ExchangeError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (VerificationError, grpc.StatusCode.INVALID_ARGUMENT),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (IdentityError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Conflict, grpc.StatusCode.ABORTED),
    (StaleCursor, grpc.StatusCode.FAILED_PRECONDITION),
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


class Guard:
    """Authenticates and authorises a call, and maps errors to statuses."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def admit(self, method: str, context: grpc.ServicerContext) -> Principal:
        principal = self._authenticator.principal(_cert_pem(context))
        allowed = ROLES.get(method, frozenset())
        if principal.role not in allowed:
            raise PermissionDenied(f"{principal.role.value} may not call {method.rsplit('/', 1)[-1]}")
        return principal

    def fail(self, method: str, context: grpc.ServicerContext, error: Exception, who: str) -> None:
        if isinstance(error, ExchangeError):
            code = status_for(error)
            log.info("refused %s for %s: %s %s", method, who, code.name, error)
            context.abort(code, str(error))
        log.exception("internal error in %s for %s", method, who)
        context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def unary(self, method: str, fn: Callable[[Any, Principal], Message]) -> Callable[[Any, Any], Message]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Message:
            who = "unauthenticated"
            try:
                principal = self.admit(method, context)
                who = principal.identity.uri
                if isinstance(request, _Malformed):
                    raise InvalidInput("", request.problem)
                return fn(request, principal)
            except Exception as error:  # mapped to a status; nothing escapes unlogged
                self.fail(method, context, error, who)
                raise  # unreachable: abort raises

        return behaviour

    def stream(
        self, method: str, fn: Callable[[Any, Principal], Iterator[Message]]
    ) -> Callable[[Any, Any], Iterator[Message]]:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Message]:
            who = "unauthenticated"
            try:
                principal = self.admit(method, context)
                who = principal.identity.uri
                if isinstance(request, _Malformed):
                    raise InvalidInput("", request.problem)
                yield from fn(request, principal)
            except Exception as error:
                self.fail(method, context, error, who)

        return behaviour


@dataclass(frozen=True)
class Method:
    name: str  # e.g. "Submit"
    request_type: type[Message]
    fn: Callable[[Any, Principal], Any]
    streaming: bool = False


def service_handler(guard: Guard, service: str, methods: list[Method]) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler for ``service`` whose every method passes through ``guard``."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for m in methods:
        full = f"/{service}/{m.name}"
        if full not in ROLES:
            raise AssertionError(f"{full} has no entry in the role table")
        if m.streaming:
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


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
