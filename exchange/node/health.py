"""The standard gRPC health service (grpc.health.v1), behind the same guard."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from grpc_health.v1 import health_pb2

from exchange.core.identity import Principal
from exchange.errors import NotFound
from exchange.node.rpc import Method

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_WATCH_POLL_SECONDS = 1.0


class Health:
    def __init__(self, services: list[str]) -> None:
        self._status = dict.fromkeys(["", *services], SERVING)
        self._changed = threading.Condition()
        self._stopped = False

    def methods(self) -> list[Method]:
        return [
            Method("Check", health_pb2.HealthCheckRequest, self.check),
            Method("Watch", health_pb2.HealthCheckRequest, self.watch, streaming=True),
        ]

    def set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        with self._changed:
            for name in self._status:
                self._status[name] = status
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            for name in self._status:
                self._status[name] = NOT_SERVING
            self._changed.notify_all()

    def check(self, request: health_pb2.HealthCheckRequest, _caller: Principal) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            raise NotFound(f"service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def watch(
        self, request: health_pb2.HealthCheckRequest, _caller: Principal
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            with self._changed:
                status = self._status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                if status == last:
                    if self._stopped:
                        return
                    self._changed.wait(_WATCH_POLL_SECONDS)
                    continue
            last = status
            yield health_pb2.HealthCheckResponse(status=status)
