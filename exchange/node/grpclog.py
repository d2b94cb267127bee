"""gRPC's own log lines, as JSON lines like every other line the node writes (exchange/logs.py).

gRPC's C core writes its lines (through absl) straight to file descriptor 2, outside Python's
logging, in its own format. :func:`route_grpc_logs` points descriptor 2 at a pipe before gRPC
starts, and a thread turns what arrives into log records of the logger ``grpc``: one JSON line
per gRPC line, at gRPC's level.

A TLS handshake refused on the node's port (a client without a federation certificate, an
expired or foreign one) never reaches Python code, and gRPC's own line about it does not say
who it was. So the node also turns on gRPC's ``handshaker`` trace: its lines (read here,
never shown) carry each inbound connection's peer address, and a failed inbound handshake
becomes one WARNING line, ``TLS handshake refused``, with ``client`` (the address, as on RPC
lines) and ``error``. What is shown is chosen with ``node serve --log-level``; an operator's own
``GRPC_TRACE`` flags are kept (their lines become JSON lines too).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TextIO

__all__ = ["GrpcLogRouting", "route_grpc_logs"]

log = logging.getLogger("grpc")

# "I1204 16:59:14.849442   20921 handshaker.cc:155] message" (absl's prefix).
_HEADER = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+(\d+) ([\w./+-]+):\d+\] ?(.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
# The handshaker trace, in the order one inbound connection logs it (one thread):
#   CallNextHandshakerLocked: ... args={... grpc.internal.endpoint_peer_address=ipv4:1.2.3.4:5678 ...}
#   handshake manager 0x7f..: calling handshaker security at index 1
#   handshake manager 0x7f..: Failed with error: UNKNOWN: Ssl handshake failed ...
_PEER = re.compile(r"grpc\.internal\.endpoint_peer_address=([^,}\s]+)")
_STARTING = re.compile(r"^handshake_manager (0x[0-9a-f]+): adding handshaker \S+ \[\S+\] at index 0$")
_CALLING = re.compile(r"^handshake manager (0x[0-9a-f]+): +calling handshaker security")
_FAILED = re.compile(r"^handshake manager (0x[0-9a-f]+): Failed with error: (.*)$")
# Lines that only the trace or the replaced handshake line would show.
_TRACE_FILES = frozenset({"handshaker.cc", "channel_trace.h", "trace.cc"})
_HANDSHAKE_LINE = "Handshake failed with error"
_REMEMBERED = 1024  # handshakes in flight whose peer is remembered, at most
_PIPE_BYTES = 1024 * 1024  # gRPC's lines waiting to be read, at most


@dataclass
class _Entry:
    level: int
    thread: str
    source: str
    text: str


class _Translator:
    """Turns gRPC's lines into log records; remembers inbound handshakes' peers."""

    def __init__(self) -> None:
        self._pending_peer: dict[str, str] = {}  # thread -> the peer its last handshake step named
        self._peers: OrderedDict[str, str] = OrderedDict()  # handshake manager -> peer

    def entry(self, entry: _Entry) -> None:
        source = entry.source.rsplit("/", 1)[-1]
        if source in _TRACE_FILES:
            self._trace(entry)
        elif _HANDSHAKE_LINE in entry.text and source.startswith("ssl_transport_security"):
            return  # replaced by the line _trace writes, which names the peer
        elif source == "log.cc" and "not suitable for production" in entry.text:
            return  # about the INFO verbosity the trace needs; what is shown is the node's choice
        else:
            log.log(entry.level, "%s", entry.text, extra={"source": source})

    def _trace(self, entry: _Entry) -> None:
        text = entry.text
        starting = _STARTING.match(text)
        if starting is not None:  # a new handshake (inbound or outbound) at an address used before
            self._peers.pop(starting.group(1), None)
            return
        if text.startswith("CallNextHandshakerLocked"):
            peer = _PEER.search(text)
            if peer is not None and "grpc.server_uri=" not in text:  # inbound: a client's connection
                self._pending_peer[entry.thread] = peer.group(1)
            return
        calling = _CALLING.match(text)
        if calling is not None:
            peer_address = self._pending_peer.pop(entry.thread, None)
            if peer_address is not None:
                self._peers[calling.group(1)] = peer_address
                while len(self._peers) > _REMEMBERED:
                    self._peers.popitem(last=False)
            return
        failed = _FAILED.match(text)
        if failed is not None:
            peer_address = self._peers.pop(failed.group(1), None)
            if peer_address is not None:
                error = failed.group(2).removeprefix("UNKNOWN: ").removesuffix(": OK")
                log.warning("TLS handshake refused: %s", error, extra={"client": peer_address, "error": error})


def _pump(read_fd: int) -> None:
    translator = _Translator()
    last: _Entry | None = None  # the entry a continuation line belongs to
    with os.fdopen(read_fd, "r", encoding="utf-8", errors="backslashreplace") as pipe:
        for raw in pipe:
            line = raw.rstrip("\n")
            header = _HEADER.match(line)
            if header is not None:
                level, thread, source, text = header.groups()
                last = _Entry(_LEVELS[level], thread, source, text)
                translator.entry(last)
            elif not line.strip():
                continue
            elif last is not None and last.source.rsplit("/", 1)[-1] in _TRACE_FILES:
                continue  # the rest of a trace entry ("=== Source Location Trace: ===", ...)
            else:  # a continuation of a line shown, or something else written to fd 2
                log.log(last.level if last else logging.WARNING, "%s", line, extra={"source": "stderr"})


@dataclass
class GrpcLogRouting:
    """What :func:`route_grpc_logs` set up; :meth:`stop` puts everything back."""

    stream: TextIO  # the original standard error, for the JSON handler
    _saved_fd: int
    _thread: threading.Thread
    _stderr: TextIO  # sys.stderr before
    _environ: dict[str, str | None]  # the gRPC variables before

    def stop(self, timeout: float = 2.0) -> None:
        """Restore descriptor 2 (closing the pipe's last writer), let the thread drain the pipe,
        and put back ``sys.stderr`` and the environment (a command run later in this process,
        or a process it starts, gets what it would have had)."""
        self.stream.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        self._thread.join(timeout)
        sys.stderr = self._stderr
        self.stream.close()
        for name, value in self._environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def route_grpc_logs() -> GrpcLogRouting:
    """Send what gRPC writes to standard error through logging; call before gRPC is imported.

    Python's own ``sys.stderr`` is pointed at the original standard error, so the JSON handler
    and the CLI's one-line errors go there directly, never round the pipe.
    """
    environ = {name: os.environ.get(name) for name in ("GRPC_VERBOSITY", "GRPC_TRACE")}
    # The handshaker trace is written at INFO: what is shown is --log-level's choice, made on
    # the records, so a quieter GRPC_VERBOSITY inherited from the environment would only hide
    # the refused handshakes. DEBUG is kept, for whoever debugs gRPC itself.
    os.environ["GRPC_VERBOSITY"] = "DEBUG" if os.environ.get("GRPC_VERBOSITY", "").upper() == "DEBUG" else "INFO"
    traces = [t for t in os.environ.get("GRPC_TRACE", "").split(",") if t]
    os.environ["GRPC_TRACE"] = ",".join(traces if "handshaker" in traces else [*traces, "handshaker"])
    previous = sys.stderr
    previous.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    # gRPC may write while its caller holds the GIL, which the reading thread needs: were the
    # pipe ever full, that write would wait for a reader that waits for it. So the pipe is
    # large, and a write that finds it full fails (a gRPC line lost) instead of blocking.
    with contextlib.suppress(OSError, AttributeError):  # Linux only; the default is 64 KiB
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    os.set_blocking(write_fd, False)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    stream = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    sys.stderr = stream
    thread = threading.Thread(target=_pump, args=(read_fd,), name="grpc-log", daemon=True)
    thread.start()
    return GrpcLogRouting(stream, saved, thread, previous, environ)
