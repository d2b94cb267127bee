"""What the liaison commands (``disclosures``, ``watch``, ``export``) share: the Liaison
service's methods on a client's channel, and small helpers for showing what it answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from exchange.errors import TransportError
from exchange.render import Shown, clean, display_width, fit
from exchange.v1 import records_pb2

if TYPE_CHECKING:
    from exchange.client import Client, LiaisonCalls

__all__ = ["decode", "liaison_calls", "table", "when"]


def liaison_calls(client: Client) -> LiaisonCalls:
    """The Liaison service's methods on ``client``'s channel (exchange/client.py). Imported here,
    when a command connects: loading gRPC at start-up would come before its logging is set up."""
    from exchange.client import LiaisonCalls

    return LiaisonCalls(client)

def decode(held: records_pb2.HeldRecord, client: Client) -> Shown:
    try:
        return Shown.from_held(held)
    except DecodeError:
        raise TransportError(f"node at {client.address} sent a record that does not parse") from None


def when(stamp: Any) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return str(stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ"))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    cells = [[clean(c) for c in row] for row in rows]  # values come from partners and users
    widths = [max(display_width(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return ["  ".join(fit(c, w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *cells]]
