"""The console's way to the user's own node: the CLI's client, called off the event loop.

The console is a client like ``exchange``: it holds the user's certificate and key, and the
node decides (its guard, its role table, the one disclosure decision). It never opens a database.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from exchange.client import Client, LiaisonCalls

__all__ = ["NodeCalls"]

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class NodeCalls(LiaisonCalls):
    """Every call the console makes, each in a worker thread (gRPC's channel is thread-safe)."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.client = client

    async def __call__(self, fn: grpc.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
        """``fn(request)`` through the client (every failure an exchange error), off the loop."""
        return await asyncio.to_thread(self.client.call, fn, request)

    def close(self) -> None:
        self.client.close()
