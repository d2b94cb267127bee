"""gRPC server reflection, behind the same guard as every other service.

Standard tools (grpcurl, buf curl, grpcui) ask a server which services it has and
fetch their descriptors, so an operator can list and call the node without the
.proto files. The node serves it on its one mutual-TLS port: a client without
a federation certificate is refused at the handshake, and a call goes through
the guard like any other (an authenticated federation identity is required;
``ROLES`` lets any role ask, as for health).

Both versions of the protocol are served: ``grpc.reflection.v1.ServerReflection``,
which current clients ask for first, and ``grpc.reflection.v1alpha.ServerReflection``,
which older ones know. grpcio-reflection ships only v1alpha; v1 is the same protocol
under a new package name (same messages, same field numbers), so the library's one
servicer answers both, and the v1 file a client may ask for is derived from
v1alpha's (:func:`v1_file`). Descriptors come from a private pool holding only the
files of the services the node serves (and their imports), not everything the
process happens to have imported.
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

__all__ = ["SERVICES", "V1", "V1ALPHA", "Reflection", "v1_file"]

log = logging.getLogger("exchange.node")

V1ALPHA: str = reflection.SERVICE_NAME  # "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICES = (V1, V1ALPHA)


class Reflection:
    """Reflection over ``services`` (full names, e.g. "exchange.v1.SyncService") and itself, in
    both versions: register :meth:`methods` under each name in ``SERVICES``."""

    def __init__(self, services: Sequence[str]) -> None:
        known = descriptor_pool.Default()  # every generated _pb2 module registers its file here
        pool = descriptor_pool.DescriptorPool()
        added: set[str] = set()
        names: list[str] = []
        for name in (*services, V1ALPHA):
            try:
                file = known.FindFileContainingSymbol(name)
            except KeyError:
                # Served without a generated module (hand-written handlers): nothing to describe.
                log.warning("reflection: no descriptor for %s; it is served but not listed", name)
                continue
            _add(pool, file, added)
            names.append(name)
        pool.Add(v1_file())
        names.append(V1)
        self.services: tuple[str, ...] = tuple(sorted(names))
        self._servicer = reflection.ReflectionServicer(self.services, pool=pool)

    def methods(self) -> list[Method]:
        # v1's messages are v1alpha's on the wire, so v1alpha's classes parse and encode both.
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


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``, made from the library's v1alpha file by renaming
    its package: upstream's v1 file differs from v1alpha only there, in its language options
    and in comments."""
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # java_package and the like name v1alpha

    def renamed(type_name: str) -> str:
        return new + type_name.removeprefix(old)

    messages = list(proto.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            if field.type_name.startswith(old):  # only message-typed fields have one to set
                field.type_name = renamed(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type, method.output_type = renamed(method.input_type), renamed(method.output_type)
    return proto


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
