"""Exchange: indicator sharing between partner agencies over mutual TLS.

The public surface is small: the exception tree, the disclosure decision and
its inputs, and envelope verification. Everything else (storage, the gRPC
node, the command line) is reached through the ``exchange`` command.
"""

import typing as _typing

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

if _typing.TYPE_CHECKING:
    from exchange.records.envelope import open_record, verify_envelope

# Envelope verification needs cryptography and protobuf: loaded on first use, so that
# importing the pure core (which imports this package first) loads neither.
_LAZY = {"open_record": "exchange.records.envelope", "verify_envelope": "exchange.records.envelope"}

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


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'exchange' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
