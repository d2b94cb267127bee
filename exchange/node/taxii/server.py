"""The TAXII 2.1 server: aiohttp on its own event loop and thread, inside the node process.

Why aiohttp: a well-kept asyncio HTTP server whose request transport exposes the TLS
connection's ``ssl_object``, so the verified client certificate reaches the application
and identity comes from it alone, exactly as for gRPC (``exchange.node.auth``).

TLS requires a client certificate issued by this agency's own CA (the only people a node
serves over TAXII are its agency's users): no certificate, a partner's user certificate
or a foreign CA end at the handshake. Then the certificate's SAN URI names the user, the
node's configuration gives the role (the roles that may Search may read TAXII) and the
clearance, and every page goes through the disclosure decision (``exchange.node.taxii.feed``).
Errors are TAXII error objects with the right status, never a traceback.

Endpoints (read-only): discovery ``/taxii2/``, the API root ``/exchange/``, its collections,
and per collection ``objects/`` (``added_after``, ``limit``, ``next``, ``match[id|type|version|
spec_version]``), ``objects/{id}/``, ``objects/{id}/versions/`` and ``manifest/``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from exchange.config import TaxiiCollection, TaxiiConfig, split_host_port
from exchange.core.identity import Principal
from exchange.errors import (
    ConfigError,
    ExchangeError,
    IdentityError,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
)
from exchange.node.admission import Admission
from exchange.node.auth import Authenticator
from exchange.node.rpc import ROLES
from exchange.node.taxii.feed import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Feed,
    Item,
    Page,
    Query,
    parse_timestamp,
    timestamp,
    version_of,
)

__all__ = ["API_ROOT", "MEDIA_STIX", "MEDIA_TAXII", "TaxiiServer"]

log = logging.getLogger("exchange.node.taxii")

MEDIA_TAXII = "application/taxii+json;version=2.1"
MEDIA_STIX = "application/stix+json;version=2.1"
API_ROOT = "exchange"
READERS = ROLES["/exchange.v1.QueryService/Search"]  # who may read TAXII: who may Search
MAX_CONTENT_LENGTH = 1_048_576  # nothing is posted (read-only); what the API root announces
_MATCH_FIELDS = ("id", "type", "version", "spec_version")
ADMISSION_METHOD = "/taxii/2.1"  # how fair serving names a TAXII request (user_concurrent_calls)
_PRINCIPAL = web.RequestKey("principal", Principal)  # the verified caller, set by _guard

T = TypeVar("T")


class _Request:
    """A TAXII request as fair serving sees a call: released when the handler returns."""

    def cancel(self) -> None:
        pass  # a page ends on its own; nothing streams

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # the ``with`` block releases the slot


def _error(status: int, title: str, description: str = "") -> web.Response:
    body: dict[str, Any] = {"title": title, "http_status": str(status)}
    if description:
        body["description"] = description
    return web.Response(status=status, body=json.dumps(body).encode("utf-8"),
                        headers={"Content-Type": MEDIA_TAXII})


def _json(body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                        headers={"Content-Type": MEDIA_TAXII, **(headers or {})})


def _accepts_taxii(accept: str) -> bool:
    """An Accept header TAXII 2.1 answers: its media type (version 2.1 or none), or a wildcard."""
    for part in accept.split(","):
        kind, *params = [p.strip().lower() for p in part.split(";")]
        if kind in ("*/*", "application/*"):
            return True
        if kind == "application/taxii+json":
            versions = [p.partition("=")[2].strip() for p in params if p.startswith("version")]
            if not versions or "2.1" in versions:
                return True
    return False


def parse_query(request: web.Request) -> Query:
    """The filters of a request; anything malformed is InvalidInput (400) naming the parameter."""
    params = request.rel_url.query
    added_after = parse_timestamp(params["added_after"], "added_after") if "added_after" in params else None
    values: dict[str, frozenset[str]] = {}
    for name in params:
        if name.startswith("match["):
            field = name[len("match["):-1] if name.endswith("]") else ""
            if field not in _MATCH_FIELDS:
                raise InvalidInput(name[:40], "expected match[id], match[type], match[version] or "
                                              "match[spec_version]")
            items = frozenset(v.strip() for value in params.getall(name) for v in value.split(",") if v.strip())
            if not items:
                raise InvalidInput(name, "expected one or more comma-separated values")
            values[field] = items
    versions = values.get("version", frozenset({"last"}))
    times = frozenset(parse_timestamp(v, "match[version]") for v in versions if v not in ("last", "first", "all"))
    return Query(added_after=added_after, ids=values.get("id", frozenset()), types=values.get("type", frozenset()),
                 versions=versions, version_times=times, spec_versions=values.get("spec_version", frozenset()))


def parse_limit(request: web.Request) -> int:
    raw = request.rel_url.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) == 0:
        raise InvalidInput("limit", f"expected a positive whole number, got {raw[:20]!r}")
    return min(int(raw), MAX_LIMIT)  # TAXII lets a server answer with fewer than asked


def _collection(c: TaxiiCollection) -> dict[str, Any]:
    body: dict[str, Any] = {"id": c.id, "title": c.title, "can_read": True, "can_write": False,
                            "media_types": [MEDIA_STIX]}
    if c.description:
        body["description"] = c.description
    return body


def _page_headers(items: list[Item]) -> dict[str, str]:
    if not items:
        return {}
    added = [i.added for i in items]
    return {"X-TAXII-Date-Added-First": timestamp(min(added)), "X-TAXII-Date-Added-Last": timestamp(max(added))}


def _envelope(page: Page, entries: list[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"more": page.more}
    if page.more:
        body["next"] = page.next
    if entries:
        body["objects"] = entries
    return body


class TaxiiServer:
    """Started and stopped with the node (exchange/node/server.py)."""

    def __init__(self, config: TaxiiConfig, feed: Feed, authenticator: Authenticator, admission: Admission, *,
                 cert_path: Path, key_path: Path, ca_pem: str) -> None:
        self.config = config
        self.feed = feed
        self._authenticator = authenticator
        self._admission = admission  # a TAXII request counts against the user's calls in progress
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self._ssl.load_cert_chain(cert_path, key_path)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"taxii: cannot load the node certificate {cert_path}: {exc}") from None
        self._cert_path, self._key_path = cert_path, key_path
        self._ssl.load_verify_locations(cadata=ca_pem)  # the agency's own CA: its users only
        self._ssl.verify_mode = ssl.CERT_REQUIRED
        # Blocking database work runs here, not on the event loop.
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="taxii")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def reload_certificate(self) -> None:
        """Serve the renewed node certificate on new connections (the context is shared by
        every handshake from now on; open connections keep the one they began with)."""
        try:
            self._ssl.load_cert_chain(self._cert_path, self._key_path)
        except (OSError, ssl.SSLError) as exc:
            log.error("TAXII: the renewed node certificate was not taken: %s", exc)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> int:
        host, port = split_host_port(self.config.listen)
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_loop_error)
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="taxii", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._serve(host, port), loop).result(timeout=30)
        except OSError as exc:
            self.stop()
            raise ConfigError(f"taxii: cannot listen on {self.config.listen} ({exc.strerror or exc})") from None
        log.info("TAXII 2.1 serving on %s", self.config.listen)
        return self.port

    async def _serve(self, host: str, port: int) -> int:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_CONTENT_LENGTH)
        root = f"/{API_ROOT}"
        app.router.add_get("/taxii2/", self._discovery)
        app.router.add_get(f"{root}/", self._api_root)
        app.router.add_get(f"{root}/collections/", self._collections)
        app.router.add_get(f"{root}/collections/{{cid}}/", self._one_collection)
        app.router.add_get(f"{root}/collections/{{cid}}/objects/", self._objects)
        app.router.add_get(f"{root}/collections/{{cid}}/objects/{{oid}}/", self._object)
        app.router.add_get(f"{root}/collections/{{cid}}/objects/{{oid}}/versions/", self._versions)
        app.router.add_get(f"{root}/collections/{{cid}}/manifest/", self._manifest)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, host, port, ssl_context=self._ssl, reuse_port=False)
        await site.start()
        server = site._server  # the listening sockets, for the port actually bound (":0" in tests)
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    @staticmethod
    async def _close(runner: web.AppRunner) -> None:
        server = runner.server
        transports = [h.transport for h in (server.connections if server is not None else []) if h.transport]
        await runner.cleanup()  # stop listening, close every connection
        # A TLS close waits (up to 30 s) for the client's close_notify, which a kept-alive
        # client never sends: the node is stopping, so cut the connections instead; their
        # sockets are let go in callbacks of the loop's next turns, run before it stops.
        for transport in transports:
            transport.abort()
        for _ in range(5):
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._runner is not None:
            runner = self._runner
            try:
                asyncio.run_coroutine_threadsafe(self._close(runner), loop).result(timeout=10)
            except (TimeoutError, RuntimeError):
                log.warning("TAXII server did not stop within 10 s")
            self._runner = None
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._executor.shutdown(wait=True)  # no page is read from a closed store
        loop.close()
        self._loop = None

    # --- identity and errors -----------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            principal = self._authenticator.principal(ssl.DER_cert_to_PEM_cert(der).encode("ascii") if der else None)
            if principal.role not in READERS:
                raise PermissionDenied(f"the {principal.role.value} role may not read TAXII collections")
            if not _accepts_taxii(request.headers.get("Accept", "*/*")):
                return _error(406, "Not Acceptable", f"this server answers {MEDIA_TAXII}")
            request[_PRINCIPAL] = principal
            with self._admission.call(ADMISSION_METHOD, principal, None, _Request()):
                return await handler(request)
        except IdentityError as exc:
            return _error(401, "Unauthorized", str(exc))
        except PermissionDenied as exc:
            return _error(403, "Forbidden", str(exc))
        except InvalidInput as exc:
            return _error(400, "Bad Request", str(exc))
        except Overloaded as exc:
            return _error(429, "Too Many Requests", str(exc))
        except NotFound:
            return _error(404, "Not Found", "no such resource, or not yours to see")
        except web.HTTPException as exc:  # no route (404), a method other than GET (405)...
            return _error(exc.status, exc.reason, "this TAXII server is read-only: GET only"
                          if exc.status == 405 else "")
        except ExchangeError as exc:
            log.warning("TAXII request failed: %s", exc)
            return _error(500, "Internal Server Error", "the node could not answer; see its log")
        except Exception:
            log.exception("TAXII request failed")
            return _error(500, "Internal Server Error", "the node could not answer; see its log")

    async def _blocking(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # --- endpoints ---------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        root = f"https://{request.host}/{API_ROOT}/"
        return _json({"title": f"Exchange node {self.feed.agency}",
                      "description": "TAXII 2.1, read-only: what this node may show you, as STIX 2.1.",
                      "default": root, "api_roots": [root]})

    async def _api_root(self, request: web.Request) -> web.Response:
        return _json({"title": f"Exchange {self.feed.agency}", "versions": [MEDIA_TAXII],
                      "max_content_length": MAX_CONTENT_LENGTH})

    async def _collections(self, request: web.Request) -> web.Response:
        return _json({"collections": [_collection(c) for c in self.feed.collections.values()]})

    async def _one_collection(self, request: web.Request) -> web.Response:
        return _json(_collection(self.feed.collection(request.match_info["cid"])))

    async def _paged(self, request: web.Request, endpoint: str) -> tuple[Page, list[Item]]:
        query = parse_query(request)
        limit = parse_limit(request)
        token = request.rel_url.query.get("next", "")
        caller: Principal = request[_PRINCIPAL]
        cid = request.match_info["cid"]
        page = await self._blocking(lambda: self.feed.page(cid, caller, query, limit, token, endpoint))
        return page, page.items

    async def _objects(self, request: web.Request) -> web.Response:
        page, items = await self._paged(request, "objects")
        return _json(_envelope(page, [i.obj for i in items]), _page_headers(items))

    async def _manifest(self, request: web.Request) -> web.Response:
        page, items = await self._paged(request, "manifest")
        entries = [{"id": i.obj["id"], "date_added": timestamp(i.added), "version": _version(i),
                    "media_type": MEDIA_STIX} for i in items]
        return _json(_envelope(page, entries), _page_headers(items))

    async def _found(self, request: web.Request) -> list[Item]:
        query = parse_query(request)
        caller: Principal = request[_PRINCIPAL]
        cid, oid = request.match_info["cid"], request.match_info["oid"]
        return await self._blocking(lambda: self.feed.object_items(cid, caller, oid, query))

    async def _object(self, request: web.Request) -> web.Response:
        items = await self._found(request)
        return _json({"more": False, "objects": [i.obj for i in items]}, _page_headers(items))

    async def _versions(self, request: web.Request) -> web.Response:
        items = await self._found(request)
        return _json({"more": False, "versions": [_version(i) for i in items]}, _page_headers(items))


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A refused TLS handshake (no certificate, another CA) is one warning line, not a traceback."""
    error = context.get("exception")
    if isinstance(error, ssl.SSLError | ConnectionError):
        log.warning("TAXII: connection refused at TLS: %s", error.reason if isinstance(error, ssl.SSLError) else error)
        return
    loop.default_exception_handler(context)


def _version(item: Item) -> str:
    return version_of(item.obj, item.added)
