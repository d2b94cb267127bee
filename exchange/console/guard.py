"""Who may talk to the console: one browser, signed in once, from the console's own origin.

The console holds the user's key, so any page the user visits must be kept from using it:

- the sign-in link carries a one-time token, exchanged for an HttpOnly, SameSite=Strict session
  cookie (the token is spent on first use, so a link left in a terminal's history is worthless);
- every request must name the console's own address in ``Host`` (a DNS-rebinding page names its
  own host) and, when it carries ``Origin``, the console's own origin;
- every POST must come from the console's origin and carry the session's CSRF token: cookies are
  not isolated by port, so another web server on 127.0.0.1 is "same site" and SameSite alone
  would not stop it.

Refusals are one sentence with status 403; nothing about the session is revealed.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["CSP", "CSP_REPORT_PATH", "Guard", "Session"]

CSP_REPORT_PATH = "/csp-report"
# No inline script or style anywhere, nothing from elsewhere; violations are reported to the console.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    f"report-uri {CSP_REPORT_PATH}"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on POST.
    "Referrer-Policy": "same-origin",
    # Pages carry classified records: never kept in the browser's cache.
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    id: str
    csrf: str


@dataclass
class Guard:
    """The console's sign-in token, its session, and the checks every request passes."""

    port: int
    login_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    session: Session | None = None
    token_spent: bool = False

    @property
    def cookie_name(self) -> str:
        # Cookies are shared by every port of a host: one name per console.
        return f"exchange_console_{self.port}"

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def login_url(self) -> str:
        return f"{self.base_url}/login?token={self.login_token}"

    def sign_in(self, token: str) -> Session | None:
        """A new session for the right, unspent token; None otherwise."""
        if self.token_spent or not hmac.compare_digest(token.encode(), self.login_token.encode()):
            return None
        self.token_spent = True
        self.session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        return self.session

    def session_of(self, request: web.Request) -> Session | None:
        cookie = request.cookies.get(self.cookie_name, "")
        session = self.session
        if session is None or not cookie or not hmac.compare_digest(cookie.encode(), session.id.encode()):
            return None
        return session

    def refusal(self, request: web.Request) -> str | None:
        """Why ``request`` is refused before it reaches a page, or None."""
        if request.headers.get("Host", "") not in self.hosts:
            return f"Refused: this console answers only at {self.base_url}, and the request named another host."
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.origins:
            return "Refused: the request came from another web site."
        if request.path == CSP_REPORT_PATH:
            return None  # reports come without a session; they are only counted (see the app)
        if request.method not in ("GET", "HEAD") and origin is None:
            return "Refused: a form sent to the console must come from the console's own page."
        if request.path == "/login":
            return None
        if self.session_of(request) is None:
            return ("Refused: this browser has no console session; open the link `exchange console` "
                    "printed (it works once).")
        return None

    def csrf_ok(self, request: web.Request, sent: str) -> bool:
        session = self.session_of(request)
        return session is not None and bool(sent) and hmac.compare_digest(sent.encode(), session.csrf.encode())

    def middleware(
        self, refused: Callable[[web.Request, str], web.Response]
    ) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            reason = self.refusal(request)
            if reason is not None:
                response: web.StreamResponse = refused(request, reason)
            else:
                try:
                    response = await handler(request)
                except web.HTTPException as redirect:  # a redirect raised by a page carries them too
                    redirect.headers.update(SECURITY_HEADERS)
                    raise
            response.headers.update(SECURITY_HEADERS)
            return response

        return guard
