"""What the data flow reports to monitoring: a small interface, with a no-op default.

The guard, the puller and the schedule call a :class:`Metrics` they are given;
this base class records nothing, so code that runs without a node's monitoring
(``exchange sync``, tests, benchmarks) passes nothing and pays nothing. The
node's Prometheus implementation is ``exchange.node.metrics.NodeMetrics``.
Nothing here imports a metrics library.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["NO_METRICS", "Metrics"]


class Metrics:
    """Events worth counting. Every method is cheap and never raises."""

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        """One RPC ended: ``method`` as "package.Service/Method", ``code`` a gRPC status name."""

    def pull_finished(self, peer: str, *, ok: bool, at: float) -> None:
        """One pull from ``peer`` ended (``at``: Unix time); ``ok`` when it ended without error."""

    def entries_rejected(self, peer: str, events: Mapping[str, int]) -> None:
        """A committed batch from ``peer`` raised these security events, counted by kind
        (``BatchReport.events``)."""


NO_METRICS = Metrics()
