"""gRPC server reflection, behind the same guard as every other service.

Standard tools (grpcurl, grpcui) ask a server which services it has and fetch
their descriptors, so an operator can list and call the node without the
.proto files. The node serves it on its one mutual-TLS port: a client without
a federation certificate is refused at the handshake, and a call goes through
the guard like any other (an authenticated federation identity is required;
``ROLES`` lets any role ask, as for health).

grpcio-reflection implements ``grpc.reflection.v1alpha.ServerReflection``;
grpcurl asks for ``grpc.reflection.v1`` first and falls back to it when the
node answers UNIMPLEMENTED. Descriptors come from a private pool holding only
the files of the services the node serves (and their imports), not everything
the process happens to have imported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection, reflection_pb2

from exchange.core.identity import Principal
from exchange.node.rpc import Method

__all__ = ["SERVICE", "Reflection"]

log = logging.getLogger("exchange.node")

SERVICE: str = reflection.SERVICE_NAME  # "grpc.reflection.v1alpha.ServerReflection"


class Reflection:
    """Reflection over ``services`` (full names, e.g. "exchange.v1.SyncService") and itself."""

    def __init__(self, services: Sequence[str]) -> None:
        known = descriptor_pool.Default()  # every generated _pb2 module registers its file here
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()
        names: list[str] = []
        for name in (*services, SERVICE):
            try:
                file = known.FindFileContainingSymbol(name)
            except KeyError:
                # Served without a generated module (hand-written handlers): nothing to describe.
                log.warning("reflection: no descriptor for %s; it is served but not listed", name)
                continue
            _add(pool, file, added)
            names.append(name)
        self.services: tuple[str, ...] = tuple(sorted(names))
        self._servicer = reflection.ReflectionServicer(self.services, pool=pool)

    def methods(self) -> list[Method]:
        return [Method("ServerReflectionInfo", reflection_pb2.ServerReflectionRequest, self.info,
                       streaming=True, client_streaming=True)]

    def info(
        self, requests: Iterator[reflection_pb2.ServerReflectionRequest], _caller: Principal
    ) -> Iterator[reflection_pb2.ServerReflectionResponse]:
        # The library's servicer answers each request from the pool and never touches its
        # context argument; the guard has already dealt with identity and errors. (grpc-stubs
        # declares it as returning None; it is a generator of responses.)
        servicer: Any = self._servicer
        responses: Iterator[reflection_pb2.ServerReflectionResponse] = servicer.ServerReflectionInfo(requests, None)
        return responses


def _add(pool: descriptor_pool.DescriptorPool, file: FileDescriptor, added: set[str]) -> None:
    """Add ``file`` to ``pool`` after its imports (a pool refuses a file whose imports it lacks)."""
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)
    added.add(file.name)
