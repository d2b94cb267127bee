"""Flags shared by every command that talks to a node, and small argument types.

gRPC is imported only when a command connects (see ``client_from``).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from exchange.errors import InvalidInput
from exchange.v1 import records_pb2

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = [
    "Commands",
    "Parser",
    "client_from",
    "connection_flags",
    "parse_ref",
    "positive_float",
    "positive_int",
]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"exchange: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


# The same values as exchange.client's, repeated so that parsing does not load gRPC.
PROFILE_ENV = "EXCHANGE_PROFILE"
DEFAULT_TIMEOUT = 30.0

# argparse's subparsers object; a string because the class is not subscriptable at run time.
Commands: TypeAlias = "argparse._SubParsersAction[Parser]"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def connection_flags() -> Parser:
    """A parent parser with the flags that say which node to reach and as whom."""
    parent = Parser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--profile", metavar="FILE", help=f"profile TOML (default: ${PROFILE_ENV})")
    group.add_argument("--node", metavar="HOST:PORT", help="the node's address (overrides the profile)")
    group.add_argument("--cert", metavar="FILE", help="your certificate (PEM)")
    group.add_argument("--key", metavar="FILE", help="your private key (PEM)")
    group.add_argument("--ca", metavar="FILE", help="your agency's CA certificate (PEM)")
    group.add_argument("--agency", metavar="CODE", help="your agency's code, e.g. JPN-NPA")
    group.add_argument(
        "--timeout", metavar="SECONDS", type=positive_float, default=DEFAULT_TIMEOUT,
        help=f"deadline for each call (default {DEFAULT_TIMEOUT:g})",
    )
    return parent


def client_from(args: argparse.Namespace) -> Client:
    # gRPC's C core logs handshake failures to stderr itself, and the error
    # that follows says the same in one line. It reads this setting when first
    # imported, hence the import below; GRPC_VERBOSITY=DEBUG still shows them.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from exchange.client import Client, resolve_profile

    profile = resolve_profile(args.profile, args.node, args.cert, args.key, args.ca, args.agency)
    return Client(profile, timeout=args.timeout)


def parse_ref(text: str) -> records_pb2.RecordRef:
    """``ORIGINATOR/RECORD_ID``; the node checks the parts, this only splits them."""
    originator, sep, record_id = text.partition("/")
    if not sep or not originator or not record_id or "/" in record_id:
        raise InvalidInput("record", f"expected ORIGINATOR/RECORD_ID, got {text!r}")
    return records_pb2.RecordRef(originator=originator, record_id=record_id)
