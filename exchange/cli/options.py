"""Flags shared by every command that talks to a node, and small argument types.

gRPC is imported only when a command connects (see ``client_from``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias

import platformdirs

from exchange.errors import InvalidInput
from exchange.records.normalize import OBSERVABLE_TYPES

if TYPE_CHECKING:
    from exchange.client import Client

__all__ = [
    "OBSERVABLE_TYPES_HELP",
    "OBSERVABLE_TYPE_NAMES",
    "Commands",
    "Parser",
    "check_observable_type",
    "client_from",
    "connection_flags",
    "default_profile",
    "observable_type",
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


OBSERVABLE_TYPE_NAMES = ", ".join(sorted(OBSERVABLE_TYPES))
OBSERVABLE_TYPES_HELP = f"Observable types: {OBSERVABLE_TYPE_NAMES}."


def check_observable_type(text: str, field: str) -> str:
    """``text`` if it is an observable type; otherwise an error suggesting the nearest one."""
    if text in OBSERVABLE_TYPES:
        return text
    # The node would refuse it too; saying so here can also suggest what was meant.
    close = difflib.get_close_matches(text.lower(), sorted(OBSERVABLE_TYPES), n=1)
    hint = f"; did you mean {close[0]}?" if close else f" (one of: {OBSERVABLE_TYPE_NAMES})"
    raise InvalidInput(field, f"unknown observable type {text!r}{hint}")


def observable_type(text: str) -> str:
    """An argparse type: an observable type, or a usage error suggesting the nearest one."""
    try:
        return check_observable_type(text, "")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


GLOBAL_TITLE = "connection (before or after COMMAND)"


def default_profile() -> Path:
    """The profile used when neither --profile nor $EXCHANGE_PROFILE names one (XDG on Linux)."""
    return platformdirs.user_config_path("exchange") / "profile.toml"


def profile_help() -> str:
    return (f"profile TOML; first of: --profile FILE, ${PROFILE_ENV}, {default_profile()} (if it exists); "
            "each flag below overrides the profile's value")


def connection_flags(*, top_level: bool = False) -> Parser:
    """A parent parser with the flags that say which node to reach and as whom.

    The same flags sit on the top-level parser (``top_level``) and on each command, so
    they work before or after the command's name. On the commands they default to
    "not given" (SUPPRESS), so a value given before the name is not reset after it.
    """
    parent = Parser(add_help=False)
    group = parent.add_argument_group(GLOBAL_TITLE)

    def default(value: object) -> object:
        return value if top_level else argparse.SUPPRESS

    group.add_argument("--profile", metavar="FILE", default=default(None), help=profile_help())
    group.add_argument("--node", metavar="HOST:PORT", default=default(None),
                       help="the node's address (overrides the profile)")
    group.add_argument("--cert", metavar="FILE", default=default(None), help="your certificate (PEM)")
    group.add_argument("--key", metavar="FILE", default=default(None), help="your private key (PEM)")
    group.add_argument("--ca", metavar="FILE", default=default(None), help="your agency's CA certificate (PEM)")
    group.add_argument("--agency", metavar="CODE", default=default(None),
                       help="your agency's code, e.g. JPN-NPA")
    group.add_argument(
        "--timeout", metavar="SECONDS", type=positive_float, default=default(DEFAULT_TIMEOUT),
        help=f"deadline for each call (default {DEFAULT_TIMEOUT:g})",
    )
    return parent


def client_from(args: argparse.Namespace) -> Client:
    # gRPC's C core logs handshake failures to stderr itself, and the error
    # that follows says the same in one line. It reads this setting when first
    # imported, hence the import below; GRPC_VERBOSITY=DEBUG still shows them.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from exchange.client import Client, resolve_profile

    profile = resolve_profile(args.profile, args.node, args.cert, args.key, args.ca, args.agency,
                              default=default_profile())
    return Client(profile, timeout=args.timeout)
