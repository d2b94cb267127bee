"""Starting the console from the command line: its settings, its link, and serving until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tomllib
import webbrowser
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import platformdirs

from exchange.client import Profile
from exchange.config import load_manifest
from exchange.console.app import Settings
from exchange.console.i18n import LANGUAGES
from exchange.console.serve import listening_socket, make_console, serve
from exchange.errors import ConfigError
from exchange.logs import configure

__all__ = ["console_settings", "run_console"]


def _profile_table(path: Path | None) -> Mapping[str, object]:
    """The ``[console]`` table of the profile file (language, timezone, manifest), if any."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}  # the profile was read already; its errors were reported there
    table = data.get("console", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: console: expected a table")
    return table


def _text(table: Mapping[str, object], name: str, path: Path | None) -> str | None:
    value = table.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{path}: console.{name}: expected a string")
    return value


def console_settings(profile: Profile, profile_path: Path | None, *, language: str | None = None,
                     timezone: str | None = None, manifest: str | None = None) -> Settings:
    """Flags first, then the profile's ``[console]`` table; the manifest defaults to pki init's place."""
    table = _profile_table(profile_path)
    language = language or _text(table, "language", profile_path)
    if language is not None and language not in LANGUAGES:
        raise ConfigError(f"console language: expected one of {', '.join(LANGUAGES)}, got {language!r}")
    timezone = timezone or _text(table, "timezone", profile_path)
    if timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"console timezone: unknown time zone {timezone!r}") from None
    in_profile = _text(table, "manifest", profile_path)
    if manifest:
        manifest_path: Path | None = Path(manifest)  # a flag's path is relative to the working directory
    elif in_profile:
        base = profile_path.parent if profile_path is not None else Path()
        manifest_path = base / in_profile  # a profile's paths are relative to the profile's folder
    else:
        # pki init writes certs/out/manifest.toml beside the agencies' folders (the CA is <AGENCY>/ca.crt).
        default = profile.ca.resolve().parent.parent / "manifest.toml"
        manifest_path = default if default.is_file() else None
    loaded = load_manifest(manifest_path) if manifest_path is not None else None
    state = platformdirs.user_state_path("exchange") / f"console-{profile.agency}-{profile.cert.stem}.json"
    return Settings(profile=profile, manifest=loaded, language=language, timezone=timezone, state_file=state)


def run_console(settings: Settings, *, port: int, open_browser: bool, out: TextIO = sys.stdout) -> None:
    """Serve the console on 127.0.0.1:``port`` until SIGINT or SIGTERM."""
    sock = listening_socket(port)
    console = make_console(settings, sock)
    # Log lines (CSP reports, a bug's traceback) go to stderr as JSON, as a node's do.
    configure(agency=settings.profile.agency, level=logging.WARNING)
    profile = settings.profile
    print(f"Exchange console for {profile.agency} ({profile.cert.stem}) at {console.guard.base_url}", file=out)
    print(f"Open this link (it works once): {console.guard.login_url}", file=out)
    if settings.manifest is None:
        print("No federation manifest found: signatures are checked by your node only "
              "(--manifest FILE checks them in the console too).", file=out)
    print("Ctrl-C stops the console.", file=out, flush=True)
    if open_browser:
        webbrowser.open(console.guard.login_url)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(console, sock, stop)

    asyncio.run(main())
