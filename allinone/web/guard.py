"""Who may ask what: the token, the loopback's same-origin rule, and the headers every answer carries.

With a token (required beyond the loopback), every request but the page's own files carries it: an
``Authorization: Bearer`` header (curl, scripts) or the cookie a browser gets by opening ``/?token=...`` once
(HttpOnly, SameSite=Strict: another site's page can neither read it nor send it). A write with the cookie must also
come from the page's own origin. Without a token the server is the loopback's only, so every request must name a
loopback Host (a DNS-rebinding page names its own) and a write from a browser must be same-origin (Origin, or
Sec-Fetch-Site): another site's page cannot make a person's browser enrol or remove anyone."""
from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

COOKIE = "allinone_token"
PUBLIC = ("/", "/static/app.js", "/static/app.css", "/favicon.ico")  # the page's files: no data in them
# no inline script or style, nothing from elsewhere: a stored name can never become code (module doc of app.py)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def is_loopback_host(host: str) -> bool:
    """A Host header's name is this machine's loopback (127.x, ::1, localhost): an address, not a name that
    merely starts like one (127.0.0.1.evil.example resolves wherever its owner likes)."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Verdict:
    """Why a request is refused (status, message), or allowed (status 0)."""

    status: int = 0
    message: str = ""


def _same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:  # not from a page (curl), or an old browser that sent Sec-Fetch-Site above
        return True
    return origin in (f"http://{request.headers.get('host', '')}", f"https://{request.headers.get('host', '')}")


def verdict(request: Request, token: str) -> Verdict:
    """Whether ``request`` may go on: module doc."""
    if not token:
        if not is_loopback_host(request.headers.get("host", "")):
            return Verdict(403, "this server answers the loopback only (a token is needed beyond it)")
        if request.method in WRITES and not _same_origin(request):
            return Verdict(403, "a write must come from this server's own page")
        return Verdict()
    if request.url.path in PUBLIC:
        return Verdict()
    auth = request.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        ok = hmac.compare_digest(auth[7:].strip().encode(), token.encode())
        return Verdict() if ok else Verdict(403, "wrong token")
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        return Verdict(401, "a token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN once")
    if not hmac.compare_digest(cookie.encode(), token.encode()):
        return Verdict(403, "wrong token")
    if request.method in WRITES and not _same_origin(request):
        return Verdict(403, "a write must come from this server's own page")
    return Verdict()


def _login(request: Request, token: str) -> Response | None:
    """``/?token=...``: the cookie set and the token taken out of the address bar (and the history)."""
    given = request.query_params.get("token")
    if request.url.path != "/" or given is None or not token:
        return None
    if not hmac.compare_digest(given.encode(), token.encode()):
        return JSONResponse({"error": "wrong token"}, 403)
    response = RedirectResponse("/", 303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


class Guard:
    """ASGI middleware: the verdict on every HTTP request, and HEADERS on every answer."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        request = Request(scope)
        refused = _login(request, self.token)
        v = verdict(request, self.token) if refused is None else Verdict()
        if refused is None and v.status:
            log.info("refused %s %s: %s", request.method, request.url.path, v.message)
            refused = JSONResponse({"error": v.message}, v.status)
        if refused is not None:
            await refused(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


__all__ = ["COOKIE", "CSP", "Guard", "Verdict", "is_loopback_host", "verdict"]
