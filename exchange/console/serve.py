"""Running the console: a socket on 127.0.0.1 only, the aiohttp server on it, and a thread to
serve it from (the tests, and anything else embedding a console)."""

from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web

from exchange.client import Client
from exchange.console.app import Console, Settings
from exchange.console.guard import Guard
from exchange.console.node import NodeCalls
from exchange.errors import TransportError

__all__ = ["ConsoleThread", "listening_socket", "make_console", "serve"]


def listening_socket(port: int) -> socket.socket:
    """A socket on 127.0.0.1 only: the console is never reachable from another machine."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    sock.listen(64)
    return sock


def make_console(settings: Settings, sock: socket.socket) -> Console:
    try:
        client = Client(settings.profile, timeout=settings.timeout)
    except BaseException:
        sock.close()  # unusable key material: the port is not held on to
        raise
    return Console(settings, Guard(port=sock.getsockname()[1]), NodeCalls(client))


async def serve(console: Console, sock: socket.socket, stop: asyncio.Event) -> None:
    runner = web.AppRunner(console.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        console.calls.close()


class ConsoleThread:
    """A console served from a thread of its own (tests, and anything embedding one)."""

    def __init__(self, settings: Settings, port: int = 0) -> None:
        self.sock = listening_socket(port)
        self.console = make_console(settings, self.sock)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)

    def _run(self) -> None:
        self._loop.run_until_complete(serve(self.console, self.sock, self._stop))
        self._loop.close()

    def start(self) -> ConsoleThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
