"""Fair serving: whether a call may start now, and a watchdog over the streams that run.

Every call holds one of the server's ``rpc_threads`` while it runs, and a server
stream holds it until its client has taken the last message (gRPC's send waits on
HTTP/2 flow control): a partner that opens Pull streams and never reads them pins a
thread per stream. So, in ``[limits]`` (exchange/config.py):

1. a partner node has at most ``partner_concurrent_calls`` calls in progress, and all
   partners together at most ``all_partners_concurrent_calls``, fewer than
   ``rpc_threads``: the other threads are the users', whatever partners do;
2. a user has at most ``user_concurrent_calls`` calls in progress;
3. a stream whose next message has waited ``stream_stall_seconds`` for its client to
   take it, or that has lived ``stream_max_seconds``, or whose caller's certificate a
   newly adopted manifest revokes, is cancelled by the watchdog, which frees its thread
   and its slot (a revoked caller's stream also ends at its next message);
4. per partner, Digest calls and pulls from an empty cursor (each reads the whole log)
   are rate-limited by token buckets.

A call over a bound is refused at once (:class:`Overloaded`, RESOURCE_EXHAUSTED) with
a message naming the bound; nothing queues behind a busy partner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from exchange.config import Limits
from exchange.core.identity import Principal, Role
from exchange.errors import IdentityError, Overloaded
from exchange.runtime import Periodic

log = logging.getLogger("exchange.node")

PULL = "/exchange.v1.SyncService/Pull"
DIGEST = "/exchange.v1.SyncService/Digest"
WATCHDOG_TICK_SECONDS = 0.1  # how late past its bound a stream may be cancelled, at most

T = TypeVar("T")


class Cancellable(Protocol):
    """What the admission needs of a call's context (a ``grpc.ServicerContext`` has both)."""

    def cancel(self) -> None: ...

    def add_callback(self, callback: Callable[[], None]) -> bool: ...


class TokenBucket:
    """``capacity`` calls at once, refilled at ``per_second``; ``take`` spends one if there is one."""

    def __init__(self, capacity: int, per_second: float, now: float) -> None:
        self._capacity = float(capacity)
        self._per_second = per_second
        self._tokens = float(capacity)
        self._at = now

    def take(self, now: float) -> float:
        """0.0 when a token was spent, else the seconds until one will be there."""
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._per_second


@dataclass(eq=False)
class _Stream:
    """One server stream as the watchdog sees it."""

    method: str
    who: str
    context: Cancellable
    started: float
    cert: bytes = b""  # the caller's certificate, re-checked while the stream runs
    principal: Principal | None = None  # as admitted: a stream ends if it would be another now
    waiting_since: float | None = None  # a message was handed to gRPC and not yet taken
    cancelled: bool = False


class Ticket:
    """One admitted call: released exactly once, when the call ends however it ends."""

    def __init__(self, admission: Admission, principal: Principal, method: str, context: Cancellable,
                 cert: bytes = b"") -> None:
        self._cert = cert
        self._admission = admission
        self._principal = principal
        self._method = method
        self._context = context
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission._leave(self._principal)

    def watch(self, messages: Iterator[T]) -> Iterator[T]:
        """``messages``, passed on while the watchdog times each send (rule 3)."""
        stream = self._admission._track(self._method, self._principal, self._context, self._cert)
        clock = self._admission.clock
        try:
            for message in messages:
                why = self._admission.refused(stream)
                if why is not None:  # revoked, gone or re-accredited since the stream began
                    raise IdentityError(why)
                stream.waiting_since = clock()
                yield message  # gRPC sends it before asking for the next one
                stream.waiting_since = None
        finally:
            self._admission._untrack(stream)


class Admission:
    """The bounds of the module docstring, for one node; ``start`` runs the watchdog."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic,
                 recheck: Callable[[bytes, Principal | None], str | None] | None = None) -> None:
        limits.check()
        # Why a stream's caller may no longer be served (exchange/node/auth.py's recheck): a
        # certificate revoked, an agency removed or re-accredited, a user's role or clearance
        # changed, by a manifest or configuration adopted while the stream runs, ends it.
        self.recheck = recheck
        self.limits = limits
        self.clock = clock
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}  # identity URI -> calls in progress
        self._partner_calls = 0
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._streams: set[_Stream] = set()
        self._watchdog = Periodic("stream-watchdog", WATCHDOG_TICK_SECONDS, self.sweep)

    # --- admission (rules 1, 2, 4) -------------------------------------------------------------

    @contextmanager
    def call(self, method: str, principal: Principal, request: Any, context: Cancellable,
             cert: bytes = b"") -> Iterator[Ticket]:
        """Admit the call or raise :class:`Overloaded`; its slot is held until it ends."""
        self._enter(method, principal, request)
        ticket = Ticket(self, principal, method, context, cert)
        # The context's callback runs when the RPC terminates, even if gRPC drops a cancelled
        # stream's generator without closing it; the ``finally`` covers the ordinary end.
        context.add_callback(ticket.release)
        try:
            yield ticket
        finally:
            ticket.release()

    def in_progress(self, identity_uri: str) -> int:
        """Calls in progress now of the caller with this identity URI."""
        with self._lock:
            return self._calls.get(identity_uri, 0)

    def _enter(self, method: str, principal: Principal, request: Any) -> None:
        who = principal.identity.uri
        partner = principal.role is Role.NODE
        limits = self.limits
        with self._lock:
            held = self._calls.get(who, 0)
            if partner:
                if held >= limits.partner_concurrent_calls:
                    raise Overloaded(f"{principal.identity.agency} has {held} calls in progress, the most a partner "
                                     "may (partner_concurrent_calls); try again when one ends")
                if self._partner_calls >= limits.all_partners_concurrent_calls:
                    raise Overloaded("partners have as many calls in progress as this node serves at once "
                                     "(all_partners_concurrent_calls); try again shortly")
                self._rate(method, principal, request)
                self._partner_calls += 1
            elif held >= limits.user_concurrent_calls:
                raise Overloaded(f"{held} calls in progress, the most a user may (user_concurrent_calls); "
                                 "try again when one ends")
            self._calls[who] = held + 1

    def _rate(self, method: str, principal: Principal, request: Any) -> None:
        """Rule 4, under the lock: spend a token of the partner's bucket for this kind of call."""
        limits = self.limits
        if method == DIGEST:
            kind, capacity, per_second = "Digest", limits.digest_burst_calls, limits.digest_calls_per_minute / 60
            bound = "digest_calls_per_minute"
        elif method == PULL and not getattr(request, "cursor", b""):
            kind, capacity, per_second = ("pull from an empty cursor", limits.empty_cursor_burst_pulls,
                                          limits.empty_cursor_pulls_per_hour / 3600)
            bound = "empty_cursor_pulls_per_hour"
        else:
            return
        now = self.clock()
        bucket = self._buckets.get((principal.identity.uri, kind))
        if bucket is None:
            bucket = self._buckets[(principal.identity.uri, kind)] = TokenBucket(capacity, per_second, now)
        wait = bucket.take(now)
        if wait:
            after = f"{wait:.0f} s" if wait >= 1 else f"{wait:.1f} s"
            raise Overloaded(f"{principal.identity.agency} is over its rate of {kind} calls ({bound}); "
                             f"try again in {after}")

    def _leave(self, principal: Principal) -> None:
        who = principal.identity.uri
        with self._lock:
            held = self._calls.get(who, 0) - 1
            if held > 0:
                self._calls[who] = held
            else:
                self._calls.pop(who, None)
            if principal.role is Role.NODE:
                self._partner_calls -= 1

    # --- the watchdog (rule 3) -----------------------------------------------------------------

    def refused(self, stream: _Stream) -> str | None:
        """Why the stream's caller may no longer be served, if it may not."""
        if self.recheck is None or not stream.cert:
            return None
        return self.recheck(stream.cert, stream.principal)

    def _track(self, method: str, principal: Principal, context: Cancellable, cert: bytes = b"") -> _Stream:
        stream = _Stream(method, principal.identity.uri, context, self.clock(), cert, principal)
        with self._lock:
            self._streams.add(stream)
        return stream

    def _untrack(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def start(self) -> None:
        self._watchdog.start()

    def stop(self) -> None:
        self._watchdog.stop()

    def sweep(self) -> None:
        """Cancel every stream past a bound (one pass of the watchdog)."""
        now = self.clock()
        with self._lock:
            streams = [s for s in self._streams if not s.cancelled]
        for stream in streams:
            waiting = stream.waiting_since
            if waiting is not None and now - waiting >= self.limits.stream_stall_seconds:
                why = f"its client took no message for {self.limits.stream_stall_seconds} s (stream_stall_seconds)"
            elif now - stream.started >= self.limits.stream_max_seconds:
                why = f"it ran for {self.limits.stream_max_seconds} s (stream_max_seconds)"
            else:
                refused = self.refused(stream)
                if refused is None:
                    continue
                why = f"its caller may no longer be served: {refused}"
            stream.cancelled = True
            log.warning("cancelled %s from %s: %s", stream.method.lstrip("/"), stream.who, why,
                        extra={"identity": stream.who, "method": stream.method.lstrip("/")})
            stream.context.cancel()
