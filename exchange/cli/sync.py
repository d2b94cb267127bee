"""Operator commands for sync: ``exchange sync`` pulls from one partner now; ``exchange events``
lists the security events the node has raised.

Both work on the node's own database and key material, without the node
serving: ``sync`` does exactly what one scheduled pull does (same puller, same
store, same node certificate), once, with a summary for the operator.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from exchange.cli.listing import Listing, emit, format_flag
from exchange.cli.nodeconf import config_overrides, existing_store, node_config
from exchange.cli.options import Commands
from exchange.cli.progress import Bar, progress_flag
from exchange.core.manifest import Manifest
from exchange.errors import ConfigError
from exchange.render import clean

if TYPE_CHECKING:
    from exchange.store.events import SecurityEvent
    from exchange.sync.report import PullReport

__all__ = ["register"]

EXIT_PULL_FAILED = 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def register(commands: Commands) -> None:
    sync = commands.add_parser("sync", help="pull once, now, from one partner's node")
    sync.add_argument("--peer", metavar="AGENCY", required=True, help="the partner to pull from, e.g. JPN-NPA")
    sync.add_argument("--config", metavar="CONFIG", required=True, help="this node's node.toml")
    config_overrides(sync)
    progress_flag(sync)
    sync.set_defaults(handler=run_sync)

    events = commands.add_parser("events", help="list the node's security events, newest last")
    events.add_argument("--config", metavar="CONFIG", required=True, help="the node's node.toml")
    config_overrides(events)
    format_flag(events)
    events.set_defaults(handler=run_events)


# --- exchange sync ---------------------------------------------------------------------------


def check_peer(peer: str, agency: str, manifest: Manifest) -> None:
    """Refuse a peer the federation does not know, or this node itself (both are usage errors)."""
    manifest.partner(peer)  # raises ConfigError naming the unknown agency
    if peer == agency:
        raise ConfigError(f"{peer} is this node's own agency; name a partner to pull from")


def summary(report: PullReport) -> str:
    applied = report.applied
    repair = "yes" if report.repaired else ("failed" if report.stale_cursor else "no")
    return (
        f"pull from {report.peer}: received {report.received:,}, stored {applied.stored:,}, "
        f"duplicates {applied.duplicates:,}, older {applied.older:,}, refused {applied.refused:,}, "
        f"withdrawals {applied.withdrawals:,}, equivocations {applied.equivocations:,}, "
        f"{report.seconds:.1f} s, repair: {repair}"
        + ("; more to pull (pull_max_entries reached)" if report.truncated else "")
    )


def failure(report: PullReport) -> str:
    error = " ".join(report.error.split())  # gRPC details can span several lines
    kept = report.applied.stored + report.applied.withdrawals
    done = f" ({kept:,} entries stored before it failed)" if kept else ""
    return f"pull from {report.peer} failed: {error}{done}"


def run_sync(args: argparse.Namespace) -> int:
    config = node_config(args)
    manifest = config.load_manifest()
    # Checked before the node opens its store, so a typo creates no database.
    check_peer(args.peer, config.agency, manifest)
    # Set before gRPC's first import (as client_from does): its C core would log a
    # refused connection itself, and the error below already says it in one line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from exchange.node.server import Node

    node = Node(config, schedule=False)  # opens the store (and the manifest it trusts); never listens
    try:
        with Bar(f"pulling from {args.peer}", "entries", None, force=args.progress) as bar:
            report = node.puller.pull(args.peer, progress=bar.update)
    finally:
        node.stop(grace=0)
    if report.error:
        # One error line and nothing on stdout: a summary there would read as success to a script.
        print(f"exchange: {failure(report)}", file=sys.stderr)
        return EXIT_PULL_FAILED
    print(summary(report), flush=True)
    return 0


# --- exchange events -------------------------------------------------------------------------


def _iso(at_us: int, timespec: str) -> str:
    # Integer microseconds, not a float timestamp: no rounding at the last digit.
    return (_EPOCH + dt.timedelta(microseconds=at_us)).isoformat(timespec=timespec).replace("+00:00", "Z")


def _detail(text: str) -> Any:
    """The stored JSON detail, or the raw text if a damaged row holds something else."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def event_to_json(row: SecurityEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": _iso(row.at, "microseconds"),
        "kind": row.kind,
        "peer": row.peer,
        "detail": _detail(row.detail),
    }


def event_line(row: SecurityEvent) -> str:
    # Details quote what partners sent (refusal reasons): cleaned, so no control
    # character or bidirectional override reaches the operator's terminal.
    detail = json.dumps(_detail(row.detail), ensure_ascii=False, sort_keys=True)
    return clean(f"{_iso(row.at, 'seconds')}  #{row.id}  {row.kind}  {row.peer}  {detail}")


EVENT_COLUMNS = ("id", "at", "kind", "peer", "detail")


def run_events(args: argparse.Namespace) -> int:
    from exchange.store.events import security_events

    with existing_store(args) as store:
        rows = security_events(store)  # oldest first: the newest ends up last on screen
    objects = [event_to_json(row) for row in rows]
    cells = [[o["id"], o["at"], o["kind"], o["peer"], json.dumps(o["detail"], ensure_ascii=False, sort_keys=True)]
             for o in objects]

    def text() -> list[str]:
        return [event_line(row) for row in rows] if rows else ["no security events"]

    emit(args.format, Listing(objects, EVENT_COLUMNS, cells, text))
    return 0
