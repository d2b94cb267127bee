"""The one exception tree of Exchange.

    ExchangeError
    ├── RefusedError              untrusted input refused: the caller or the data is wrong
    │   ├── InvalidInput          a malformed request or record (names the field)
    │   ├── TooLarge              over a configured bound
    │   ├── Overloaded            over a bound on calls in progress or calls per minute
    │   ├── VerificationError     bad signature, unknown or foreign key, wrong payload type
    │   ├── IdentityError         a certificate that does not establish who the caller is
    │   ├── PermissionDenied      the caller's role may not do this
    │   ├── NotFound              not held, or not the caller's to see (never distinguished)
    │   ├── Conflict              optimistic concurrency lost (a newer version exists)
    │   ├── StaleCursor           a sync cursor the server no longer recognises
    │   ├── ManifestBehind        the caller trusts an older manifest: adopt the newer one first
    │   ├── ManifestChanged       the manifest changed during a Pull: pull again under the new one
    │   └── ManifestRefused       a manifest that may not replace the one trusted
    ├── ConfigError               configuration, manifest or key material is unusable
    ├── TransportError            could not reach or talk to a node
    └── InternalError             an invariant of Exchange's own code broke: a bug, never the input

The gRPC layer maps each refusal to one status code (``exchange.node.rpc``); the
command line turns every ExchangeError into one line and a non-zero exit.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "Conflict",
    "ExchangeError",
    "IdentityError",
    "InternalError",
    "InvalidInput",
    "ManifestBehind",
    "ManifestChanged",
    "ManifestRefused",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "RefusedError",
    "StaleCursor",
    "TooLarge",
    "TransportError",
    "VerificationError",
    "clip",
]


class ExchangeError(Exception):
    """Base of every error Exchange raises on purpose."""


class RefusedError(ExchangeError):
    """Untrusted input (a request, a record, a certificate) was refused."""


class InvalidInput(RefusedError):
    """A request or record is malformed; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class TooLarge(RefusedError):
    """Input over a configured bound (bytes, entries, observables)."""


class Overloaded(RefusedError):
    """A caller over its share of the node (calls in progress, calls per minute): try later."""


class VerificationError(RefusedError):
    """An envelope's signature does not verify for the record's originator."""


class IdentityError(RefusedError):
    """A peer certificate does not establish a federation identity."""


class PermissionDenied(RefusedError):
    """The authenticated caller may not perform this operation."""


class NotFound(RefusedError):
    """Not held here, or not the caller's to see; the two are never told apart."""

    def __init__(self, what: str = "record") -> None:
        super().__init__(f"{what} not found")


class Conflict(RefusedError):
    """An optimistic update lost: the version it named is no longer current."""


class StaleCursor(RefusedError):
    """A sync cursor refers to a log state this server no longer has."""


class ManifestBehind(RefusedError):
    """The caller trusts an older manifest than this node: it must fetch and adopt the newer
    one before it is served (FAILED_PRECONDITION; the message starts "newer manifest:")."""


class ManifestChanged(RefusedError):
    """The node adopted another manifest while serving a Pull: what the stream would send next
    was decided for an accreditation, a partner list or keys that no longer hold, so it ends
    (ABORTED; the message starts "manifest changed:"). The batches sent before came with their
    cursors: the partner pulls again from the last one and is decided for afresh."""


class ManifestRefused(RefusedError):
    """A manifest that may not replace the one trusted; ``kind`` says why, for the security
    event: rollback, expired, threshold, signer, malformed, gap, conflict, agency."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(ExchangeError):
    """Configuration, manifest or key material is missing or unusable."""


class TransportError(ExchangeError):
    """A node could not be reached or the call failed in transit."""


class InternalError(ExchangeError):
    """An invariant of Exchange's own code does not hold: a bug, not bad input or configuration.

    Raised where an ``assert`` would be dropped by ``python -O``; the gRPC layer answers
    INTERNAL, the command line prints one line.
    """


CLIP_CHARS = 64  # characters of a client-supplied value quoted in a message


def clip(value: object, limit: int = CLIP_CHARS) -> str:
    """A client-supplied value cut to a short prefix, for a status message or a log line.

    A message that echoes a value at full length lets a caller make the node send (and
    log) whatever it sent: a 100,000-character field came back as a 100 KB status, which
    some clients' channels never recover from.
    """
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
