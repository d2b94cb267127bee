"""Structured logs: one JSON object per line, with who the line is about.

A node's log is read by people and by log shippers; JSON lines serve both, and
JSON escaping means a partner-supplied string (a refusal reason, a malformed
field) can never start a forged line of its own. Every line carries:

    ts        UTC time, ISO 8601 with milliseconds ("2025-06-01T09:30:00.123Z")
    level     INFO, WARNING, ...
    logger    e.g. exchange.rpc, exchange.sync
    node      this node's agency code
    msg       the message, formatted
    identity  the caller's identity URI, on every line logged while serving an RPC
    client    the caller's network address (also for calls refused before identity is known)
    peer      the partner's agency code, on every line logged while pulling from it
    ...       whatever else the line adds with ``extra=`` (method, code, duration_ms, ...)
    exc       the traceback, for lines that log an exception

``identity``, ``client`` and ``peer`` come from :func:`bound`, which a caller
wraps around a unit of work (an RPC in the guard, a pull in the puller): every
line logged inside it, by any module, carries them. Lines never carry record
contents (titles and summaries may be classified): messages name records by
``originator/record_id`` at most.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TextIO

__all__ = ["JsonFormatter", "bound", "configure", "current", "json_handler"]

_NOTHING: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("exchange_log_context", default=_NOTHING)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_CONTEXT_ATTR = "exchange_context"


def current() -> Mapping[str, str]:
    """The fields bound here (for tests and for handing work to another thread)."""
    return _context.get()


@contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Add ``fields`` to every line logged in this thread (and context) until the block ends."""
    previous = _context.get()
    token = _context.set({**previous, **fields})
    try:
        yield
    finally:
        try:
            _context.reset(token)
        except ValueError:
            # A generator closed from another context (gRPC drops a cancelled stream's
            # iterator): the token is not valid there; restore the value instead.
            _context.set(previous)


class _CaptureContext(logging.Filter):
    """Copies the bound fields onto the record in the thread that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _CONTEXT_ATTR, _context.get())
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, static: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        at = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, Any] = {
            "ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            **self._static,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, _CONTEXT_ATTR, None) or _context.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k != _CONTEXT_ATTR})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def json_handler(*, agency: str, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing JSON lines to ``stream`` (stderr), each naming ``agency``'s node."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_CaptureContext())
    handler.setFormatter(JsonFormatter({"node": agency}))
    return handler


def configure(*, agency: str, level: int | str = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send every log line of this process to ``stream`` (stderr) as JSON; returns the handler.

    Replaces the root logger's handlers, so calling it twice does not double lines.
    """
    handler = json_handler(agency=agency, stream=stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
