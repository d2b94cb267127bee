"""The ``exchange`` command: parse, dispatch, and turn every failure into one line.

A user's mistake (a bad file, a refused request, an unreachable node) is
reported as ``exchange: <message>`` on stderr with exit status 2 for usage and
input errors and 1 for everything else; only a bug shows a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from exchange.cli import admin, liaison, query, records, sync
from exchange.cli.options import Parser, connection_flags
from exchange.errors import ConfigError, ExchangeError, InvalidInput, TooLarge

__all__ = ["build_parser", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> Parser:
    parser = Parser(
        prog="exchange",
        description="Indicator exchange between partner agencies.",
        epilog="Run `exchange COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    connection = connection_flags()
    admin.register(commands)
    records.register(commands, connection)
    query.register(commands, connection)
    liaison.register(commands, connection)
    sync.register(commands)
    return parser


def _report(message: object, status: int) -> int:
    # One line, whatever the message holds (gRPC details can span several).
    print(f"exchange: {' '.join(str(message).split())}", file=sys.stderr)
    return status


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _quiet_stdout() -> None:
    # The reader went away (`exchange query | head`): point stdout at /dev/null
    # so the interpreter's final flush does not complain either.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run(handler: Handler, args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except (InvalidInput, TooLarge, ConfigError) as exc:
        return _report(exc, EXIT_USAGE)
    except ExchangeError as exc:
        return _report(exc, EXIT_FAILURE)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_FAILURE
    except OSError as exc:
        return _report(_os_error(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _report("interrupted", EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already reported in one line (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    handler: Handler = args.handler
    return run(handler, args)


if __name__ == "__main__":
    sys.exit(main())
