"""The console's way to the user's own node: the CLI's client, called off the event loop.

The console is a client like ``exchange``: it holds the user's certificate and key, and the
node decides (its guard, its role table, the one disclosure decision). It never opens a database.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from exchange.client import Client
from exchange.errors import InternalError
from exchange.v1 import liaison_pb2

__all__ = ["NodeCalls"]

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def _liaison(channel: grpc.Channel, name: str, request: type[Req], response: type[Resp]
             ) -> grpc.UnaryUnaryMultiCallable[Req, Resp]:
    # The path comes from the descriptors, so it cannot drift from liaison.proto.
    method = liaison_pb2.DESCRIPTOR.services_by_name["LiaisonService"].methods_by_name[name]
    if (method.input_type.full_name, method.output_type.full_name) != (
        request.DESCRIPTOR.full_name, response.DESCRIPTOR.full_name
    ):
        raise InternalError(f"Liaison.{name} does not take {request.__name__} and answer {response.__name__}")
    callable_: grpc.UnaryUnaryMultiCallable[Req, Resp] = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return callable_


class NodeCalls:
    """Every call the console makes, each in a worker thread (gRPC's channel is thread-safe)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        lp, channel = liaison_pb2, client.channel
        self.disclosures = _liaison(channel, "Disclosures", lp.DisclosuresRequest, lp.DisclosuresResponse)
        self.watch_add = _liaison(channel, "WatchAdd", lp.WatchAddRequest, lp.WatchAddResponse)
        self.watch_remove = _liaison(channel, "WatchRemove", lp.WatchRemoveRequest, lp.WatchRemoveResponse)
        self.watch_list = _liaison(channel, "WatchList", lp.WatchListRequest, lp.WatchListResponse)
        self.watch_hits = _liaison(channel, "WatchHits", lp.WatchHitsRequest, lp.WatchHitsResponse)
        self.report_sighting = _liaison(channel, "ReportSighting", lp.ReportSightingRequest,
                                        lp.ReportSightingResponse)
        self.sightings = _liaison(channel, "Sightings", lp.SightingsRequest, lp.SightingsResponse)

    async def __call__(self, fn: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        """``fn(request)`` through the client (every failure an exchange error), off the loop."""
        return await asyncio.to_thread(self.client.call, fn, request)

    def close(self) -> None:
        self.client.close()
