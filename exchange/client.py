"""How people's tools reach their own agency's node: profiles, channels, calls.

A profile names the node and the user's TLS material (``pki.write_profile``
writes one per user). The channel checks the node's certificate against the
agency's CA *and* the node's DNS name, so a profile can only ever talk to the
node of the agency it belongs to. Every gRPC failure becomes an exchange error.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message

from exchange.core.identity import AGENCY_RE
from exchange.core.manifest import node_dns_name
from exchange.errors import (
    ConfigError,
    Conflict,
    ExchangeError,
    IdentityError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    TransportError,
)
from exchange.records.translations import well_formed
from exchange.v1 import liaison_pb2, query_pb2, review_pb2, submission_pb2

__all__ = [
    "PROFILE_ENV",
    "Client",
    "LiaisonCalls",
    "Profile",
    "call",
    "connect",
    "load_profile",
    "resolve_profile",
]

PROFILE_ENV = "EXCHANGE_PROFILE"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
_PROFILE_FIELDS = ("node", "agency", "cert", "key", "ca")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True)
class Profile:
    node: str  # host:port of the agency's node
    agency: str
    cert: Path
    key: Path
    ca: Path
    # BCP 47 tag of the language the user reads (`language = "en"` in the profile): records are
    # shown with their translation into it where they carry one, the original beside it.
    language: str = ""


def _check_node(node: str, where: str) -> None:
    host, sep, port = node.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{where}node: expected HOST:PORT, got {node!r}")


def _check_agency(agency: str, where: str) -> None:
    if not AGENCY_RE.match(agency):
        raise ConfigError(f"{where}agency: malformed agency code {agency!r}")


def load_profile(path: Path) -> Profile:
    """Read a profile TOML; relative paths are relative to the profile's folder."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read profile {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, str] = {}
    for name in _PROFILE_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            problem = "missing" if value is None else f"expected a non-empty string, got {value!r}"
            raise ConfigError(f"{path}: {name}: {problem}")
        values[name] = value
    where = f"{path}: "
    _check_node(values["node"], where)
    _check_agency(values["agency"], where)
    language = data.get("language", "")
    if not isinstance(language, str) or (language and not well_formed(language)):
        raise ConfigError(f"{path}: language: expected a BCP 47 language tag such as \"en\", got {language!r}")
    base = path.parent
    return Profile(
        language=language,
        node=values["node"],
        agency=values["agency"],
        cert=base / values["cert"],
        key=base / values["key"],
        ca=base / values["ca"],
    )


def resolve_profile(
    profile: str | None,
    node: str | None,
    cert: str | None,
    key: str | None,
    ca: str | None,
    agency: str | None,
    *,
    default: Path | None = None,
) -> Profile:
    """The profile, with each given flag overriding its value.

    Which profile: ``profile`` (--profile), else $EXCHANGE_PROFILE, else ``default``
    (the user's configuration folder) if that file exists, else none: then the
    five flags must say it all.
    """
    profile_path = profile or os.environ.get(PROFILE_ENV) or None
    if profile_path is None and default is not None and default.is_file():
        profile_path = str(default)
    if profile_path is not None:
        base = load_profile(Path(profile_path))
    elif node and cert and key and ca and agency:
        base = Profile(node=node, agency=agency, cert=Path(cert), key=Path(key), ca=Path(ca))
    else:
        where = f", or write {default}" if default is not None else ""
        raise ConfigError(
            f"no profile: pass --profile FILE or set EXCHANGE_PROFILE{where} "
            "(or give --node, --cert, --key, --ca and --agency)"
        )
    # Flag paths are relative to the working directory, like any other command-line path.
    overrides: dict[str, Any] = {}
    if node:
        overrides["node"] = node
    if agency:
        overrides["agency"] = agency
    for name, value in (("cert", cert), ("key", key), ("ca", ca)):
        if value:
            overrides[name] = Path(value)
    resolved = replace(base, **overrides)
    _check_node(resolved.node, "--")
    _check_agency(resolved.agency, "--")
    return resolved


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None


def _read_cert(path: Path, what: str) -> tuple[bytes, list[x509.Certificate]]:
    data = _read(path, what)
    try:
        return data, x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _read_key(path: Path, cert: x509.Certificate | None, cert_path: Path) -> bytes:
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # TypeError: an encrypted key; gRPC cannot prompt for a passphrase either.
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    # A key from another certificate otherwise fails deep in the TLS stack.
    if cert is not None and _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(f"private key {path} does not belong to certificate {cert_path}")
    return data


def connect(profile: Profile, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A mutual-TLS channel to the profile's node, accepting only that agency's node name."""
    cert, chain = _read_cert(profile.cert, "certificate")
    # An expired certificate otherwise shows up as an opaque handshake failure.
    leaf = chain[0] if chain else None
    if leaf is not None and leaf.not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise ConfigError(f"certificate {profile.cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    key = _read_key(profile.key, leaf, profile.cert)
    ca, _ = _read_cert(profile.ca, "CA certificate")
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    options = [
        ("grpc.ssl_target_name_override", node_dns_name(profile.agency)),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    return grpc.secure_channel(profile.node, creds, options=options)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# gRPC words every connection failure the same way before the cause; the cause is what
# people need ("...; last error: UNKNOWN: ipv4:127.0.0.1:50101: Connection refused").
_CONNECT_PREFIX = re.compile(r"^failed to connect to all addresses; last error: [A-Z_]+: (?:ipv[46]:)?\S+: ")


def error_for(exc: grpc.RpcError, address: str) -> ExchangeError:
    """The exchange error for a failed call (the node maps refusals to codes in ``node.rpc``)."""
    code_fn = getattr(exc, "code", None)
    code = code_fn() if callable(code_fn) else None
    details_fn = getattr(exc, "details", None)
    details = _one_line(str(details_fn() or "")) if callable(details_fn) else ""
    codes = grpc.StatusCode
    if code is codes.UNAVAILABLE:
        reason = _CONNECT_PREFIX.sub("", details)
        return TransportError(f"node at {address} is unreachable: {reason or 'no details'}")
    if code is codes.DEADLINE_EXCEEDED:
        return TransportError(f"node at {address} did not answer in time")
    if code in (codes.INVALID_ARGUMENT, codes.RESOURCE_EXHAUSTED):
        return InvalidInput("", details or "invalid request")
    if code is codes.NOT_FOUND:
        return NotFound()
    if code is codes.PERMISSION_DENIED:
        return PermissionDenied(details or "permission denied")
    if code is codes.UNAUTHENTICATED:
        return IdentityError(details or "the node did not accept this certificate")
    if code in (codes.ABORTED, codes.FAILED_PRECONDITION):
        return Conflict(details or "conflict")
    name = code.name if code is not None else "UNKNOWN"
    return TransportError(f"node at {address} failed: {name}: {details or 'no details'}")


def call(
    fn: grpc.UnaryUnaryMultiCallable[Req, Resp],
    request: Req,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    address: str = "the profile's address",
) -> Resp:
    """Invoke a unary method; any gRPC failure is raised as an exchange error."""
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise error_for(exc, address) from None


def _method(
    channel: grpc.Channel, service: str, name: str, request: type[Req], response: type[Resp],
    file: Any = None,
) -> grpc.UnaryUnaryMultiCallable[Req, Resp]:
    """``service``'s method ``name``, declared in ``file`` (a module's DESCRIPTOR; by default the
    request's own .proto file)."""
    # The path comes from the descriptors, so it cannot drift from the .proto files.
    method = (file or request.DESCRIPTOR.file).services_by_name[service].methods_by_name[name]
    if (method.input_type.full_name, method.output_type.full_name) != (
        request.DESCRIPTOR.full_name, response.DESCRIPTOR.full_name
    ):
        # A bug in this file, not a user's mistake: a traceback is right.
        raise InternalError(f"{method.full_name} does not take {request.DESCRIPTOR.full_name} "
                            f"and answer {response.DESCRIPTOR.full_name}")
    callable_: grpc.UnaryUnaryMultiCallable[Req, Resp] = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return callable_


class Client:
    """A channel to one node with typed methods; use as a context manager."""

    def __init__(
        self,
        profile: Profile,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.address = profile.node
        self.agency = profile.agency
        self.language = profile.language
        self.timeout = timeout
        self.channel = connect(profile, max_message_bytes=max_message_bytes)
        sub, qry = submission_pb2, query_pb2
        self.submit = _method(self.channel, "SubmissionService", "Submit", sub.SubmitRequest, sub.SubmitResponse)
        self.submit_bulk = _method(self.channel, "SubmissionService", "SubmitBulk", sub.SubmitBulkRequest,
                                   sub.SubmitBulkResponse)
        self.revise = _method(self.channel, "SubmissionService", "Revise", sub.ReviseRequest, sub.ReviseResponse)
        self.retract = _method(self.channel, "SubmissionService", "Retract", sub.RetractRequest, sub.RetractResponse)
        self.get = _method(self.channel, "QueryService", "Get", qry.GetRequest, qry.GetResponse)
        self.search = _method(self.channel, "QueryService", "Search", qry.SearchRequest, qry.SearchResponse)
        rev = review_pb2  # release review (exchange/node/review.py)
        self.list_drafts = _method(self.channel, "ReviewService", "ListDrafts", rev.ListDraftsRequest,
                                   rev.ListDraftsResponse)
        self.get_draft = _method(self.channel, "ReviewService", "GetDraft", rev.GetDraftRequest, rev.GetDraftResponse)
        self.approve_draft = _method(self.channel, "ReviewService", "ApproveDraft", rev.ApproveDraftRequest,
                                     rev.ApproveDraftResponse)
        self.reject_draft = _method(self.channel, "ReviewService", "RejectDraft", rev.RejectDraftRequest,
                                    rev.RejectDraftResponse)

    def call(self, fn: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        return call(fn, request, timeout=self.timeout, address=self.address)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _liaison_method(channel: grpc.Channel, name: str, request: type[Req], response: type[Resp]
                    ) -> grpc.UnaryUnaryMultiCallable[Req, Resp]:
    # Declared in liaison.proto, whatever file its messages come from.
    return _method(channel, "LiaisonService", name, request, response, file=liaison_pb2.DESCRIPTOR)


class LiaisonCalls:
    """The Liaison service's methods on a client's channel (the CLI's and the console's)."""

    def __init__(self, client: Client) -> None:
        lp, channel = liaison_pb2, client.channel
        self.disclosures = _liaison_method(channel, "Disclosures", lp.DisclosuresRequest, lp.DisclosuresResponse)
        self.watch_add = _liaison_method(channel, "WatchAdd", lp.WatchAddRequest, lp.WatchAddResponse)
        self.watch_remove = _liaison_method(channel, "WatchRemove", lp.WatchRemoveRequest, lp.WatchRemoveResponse)
        self.watch_list = _liaison_method(channel, "WatchList", lp.WatchListRequest, lp.WatchListResponse)
        self.watch_hits = _liaison_method(channel, "WatchHits", lp.WatchHitsRequest, lp.WatchHitsResponse)
        self.watch_seen = _liaison_method(channel, "WatchSeen", lp.WatchSeenRequest, lp.WatchSeenResponse)
        self.report_sighting = _liaison_method(channel, "ReportSighting", lp.ReportSightingRequest,
                                               lp.ReportSightingResponse)
        self.sightings = _liaison_method(channel, "Sightings", lp.SightingsRequest, lp.SightingsResponse)
