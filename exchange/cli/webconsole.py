"""``exchange console``: the web console for the profile's user (see exchange/console/)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from exchange.cli.options import PROFILE_ENV, Commands, Parser, default_profile

__all__ = ["register"]


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def register(commands: Commands, connection: Parser) -> None:
    console = commands.add_parser(
        "console", parents=[connection], help="start the web console (on 127.0.0.1) for your profile",
        description="Serve the web console on 127.0.0.1 for the profile's user and open the browser on a "
                    "one-time sign-in link. The console talks to your node as the command line does. The "
                    "profile's optional [console] table may set language (en, ja), timezone and manifest.",
    )
    console.add_argument("--port", type=_port, default=0, help="the port on 127.0.0.1 (default: any free port)")
    console.add_argument("--no-browser", action="store_true", help="print the link without opening a browser")
    console.add_argument("--language", choices=["en", "ja"], help="the interface language (default: the browser's)")
    console.add_argument("--timezone", metavar="ZONE", help="show times in this IANA zone (default: the browser's)")
    console.add_argument("--manifest", metavar="FILE",
                         help="the federation manifest, to verify signatures in the console "
                              "(default: manifest.toml two folders above the profile's CA, if there)")
    console.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from exchange.client import resolve_profile
    from exchange.console.run import console_settings, run_console

    profile = resolve_profile(args.profile, args.node, args.cert, args.key, args.ca, args.agency,
                              default=default_profile())
    named = args.profile or os.environ.get(PROFILE_ENV) or None
    path = Path(named) if named else (default_profile() if default_profile().is_file() else None)
    settings = console_settings(profile, path, language=args.language, timezone=args.timezone,
                                manifest=args.manifest)
    run_console(dataclasses.replace(settings, timeout=args.timeout), port=args.port,
                open_browser=not args.no_browser)
    return 0
