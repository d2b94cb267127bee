"""What the liaison commands (``disclosures``, ``watch``, ``export``) share: the Liaison
service's methods on a client's channel, and small helpers for showing what it answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import DecodeError, Message

from exchange.errors import InternalError, TransportError
from exchange.render import Shown, clean, display_width, fit
from exchange.v1 import liaison_pb2, records_pb2

if TYPE_CHECKING:
    import grpc

    from exchange.client import Client

__all__ = ["LiaisonCalls", "decode", "table", "when"]

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def _method(channel: grpc.Channel, name: str, request: type[Req], response: type[Resp]) -> Any:
    # The path comes from the descriptors, so it cannot drift from liaison.proto.
    method = liaison_pb2.DESCRIPTOR.services_by_name["LiaisonService"].methods_by_name[name]
    if (method.input_type.full_name, method.output_type.full_name) != (
        request.DESCRIPTOR.full_name, response.DESCRIPTOR.full_name
    ):
        # A bug in this file, not a user's mistake: a traceback is right.
        raise InternalError(f"Liaison.{name} does not take {request.__name__} and answer {response.__name__}")
    return channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )


class LiaisonCalls:
    """The Liaison service's methods on a client's channel."""

    def __init__(self, client: Client) -> None:
        lp = liaison_pb2
        channel = client.channel
        self.disclosures: grpc.UnaryUnaryMultiCallable[lp.DisclosuresRequest, lp.DisclosuresResponse] = _method(
            channel, "Disclosures", lp.DisclosuresRequest, lp.DisclosuresResponse)
        self.watch_add: grpc.UnaryUnaryMultiCallable[lp.WatchAddRequest, lp.WatchAddResponse] = _method(
            channel, "WatchAdd", lp.WatchAddRequest, lp.WatchAddResponse)
        self.watch_remove: grpc.UnaryUnaryMultiCallable[lp.WatchRemoveRequest, lp.WatchRemoveResponse] = _method(
            channel, "WatchRemove", lp.WatchRemoveRequest, lp.WatchRemoveResponse)
        self.watch_list: grpc.UnaryUnaryMultiCallable[lp.WatchListRequest, lp.WatchListResponse] = _method(
            channel, "WatchList", lp.WatchListRequest, lp.WatchListResponse)
        self.watch_hits: grpc.UnaryUnaryMultiCallable[lp.WatchHitsRequest, lp.WatchHitsResponse] = _method(
            channel, "WatchHits", lp.WatchHitsRequest, lp.WatchHitsResponse)
        self.watch_seen: grpc.UnaryUnaryMultiCallable[lp.WatchSeenRequest, lp.WatchSeenResponse] = _method(
            channel, "WatchSeen", lp.WatchSeenRequest, lp.WatchSeenResponse)
        self.report_sighting: grpc.UnaryUnaryMultiCallable[
            lp.ReportSightingRequest, lp.ReportSightingResponse] = _method(
            channel, "ReportSighting", lp.ReportSightingRequest, lp.ReportSightingResponse)
        self.sightings: grpc.UnaryUnaryMultiCallable[lp.SightingsRequest, lp.SightingsResponse] = _method(
            channel, "Sightings", lp.SightingsRequest, lp.SightingsResponse)


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
