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
from typing import Any

import argcomplete

from exchange.cli import (
    admin,
    completion,
    export,
    keys,
    liaison,
    manifest,
    query,
    records,
    review,
    sightings,
    stiximport,
    stixverify,
    sync,
    watch,
    webconsole,
)
from exchange.cli.options import OBSERVABLE_TYPES_HELP, PROFILE_ENV, Parser, connection_flags, default_profile
from exchange.errors import ConfigError, ExchangeError, InvalidInput, TooLarge

__all__ = ["build_parser", "main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT

Handler = Callable[[argparse.Namespace], int]


class _Version(argparse.Action):
    """--version, looked up only when asked (reading the package metadata takes a while)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the installed version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from importlib import metadata

        try:
            text = f"exchange {metadata.version('exchange')}"
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            text = "exchange (not installed)"
        print(text)
        parser.exit()


def _epilog() -> str:
    # Built when asked for, not at import: the default profile's folder follows $XDG_CONFIG_HOME.
    return f"""\
Profile: the first of --profile FILE, ${PROFILE_ENV}, and {default_profile()} (if it
exists) is used; --node, --cert, --key, --ca and --agency override its values.
Connection options go before or after COMMAND. Run `exchange COMMAND --help` for a
command's options, and `exchange completion bash` (or zsh, fish) for tab completion.

{OBSERVABLE_TYPES_HELP}"""


def build_parser() -> Parser:
    parser = Parser(
        prog="exchange",
        description="Indicator exchange between partner agencies.",
        epilog=_epilog(),
        parents=[connection_flags(top_level=True)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    connection = connection_flags()
    admin.register(commands)
    keys.register(commands)
    records.register(commands, connection)
    review.register(commands, connection)
    query.register(commands, connection)
    liaison.register(commands, connection)
    watch.register(commands, connection)
    sightings.register(commands, connection)
    export.register(commands, connection)
    stixverify.register(commands)
    stiximport.register(commands, connection)
    sync.register(commands)
    webconsole.register(commands, connection)
    manifest.register(commands)
    completion.register(commands)
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


def _all_positional(extras: list[str]) -> bool:
    return all(e == "-" or not e.startswith("-") for e in extras)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Answers the shell's completion request and exits, when the shell asked; otherwise nothing.
    argcomplete.autocomplete(parser)
    try:
        args, extras = parser.parse_known_args(argv)
        # argparse gives each positional one stretch of the command line, so a command whose
        # positionals may sit on both sides of an option (revise REF --base-version N FILE)
        # receives the later ones here; any other command refuses them, as parse_args would.
        if extras and not (getattr(args, "trailing_positionals", False) and _all_positional(extras)):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        args.extras = extras
    except SystemExit as exc:  # --help (0), or a usage error already reported in one line (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    handler: Handler = args.handler
    return run(handler, args)


if __name__ == "__main__":
    sys.exit(main())
