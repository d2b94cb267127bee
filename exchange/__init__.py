"""Exchange: indicator sharing between partner agencies over mutual TLS.

The public surface is small: the exception tree, the disclosure decision and
its inputs, and envelope verification. Everything else (storage, the gRPC
node, the command line) is reached through the ``exchange`` command.
"""

from exchange.core.identity import Identity, Principal, Role
from exchange.core.manifest import Manifest
from exchange.core.marking import Marking
from exchange.core.policy import Decision, decide
from exchange.errors import (
    ConfigError,
    Conflict,
    ExchangeError,
    IdentityError,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
    RefusedError,
    StaleCursor,
    TooLarge,
    TransportError,
    VerificationError,
)
from exchange.records.envelope import open_record, verify_envelope

__all__ = [
    "ConfigError",
    "Conflict",
    "Decision",
    "ExchangeError",
    "Identity",
    "IdentityError",
    "InvalidInput",
    "Manifest",
    "Marking",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "Principal",
    "RefusedError",
    "Role",
    "StaleCursor",
    "TooLarge",
    "TransportError",
    "VerificationError",
    "decide",
    "open_record",
    "verify_envelope",
]
