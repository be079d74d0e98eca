"""The ASGI middleware in front of every route: bearer token, body size limit, and without a token
loopback Host names and same-origin writes only (README, "Security").
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend import ui
from backend.api.deps import problem

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
UPLOAD_ROUTES = (("POST", "/datasets"),)  # bodies streamed to disk by their route: they get max_upload instead



# ------------------------------------------------------------------ middleware (pure ASGI: cheap, no body buffering)
class _TooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        # An HTTPException: FastAPI re-raises those from body parsing instead of turning them into a 400.
        super().__init__(413, f"request body larger than {limit} bytes")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, port: int | None, allowed: Sequence[str]) -> bool:
    """A Host header a tokenless server answers: a loopback name on the bound port, or one of `allowed`
    (a name, any port, or name:port). A DNS-rebinding page reaches us under its own name, so it is refused."""
    host = host.strip().lower()
    if "*" in allowed or host in allowed:
        return True
    if not host or any(c in host for c in "@/\\?# "):
        return False
    try:
        parts = urlsplit(f"//{host}")
        name, given = parts.hostname or "", parts.port
    except ValueError:
        return False
    if name in allowed:
        return True
    return is_loopback(name) and (given is None or port is None or given == port)


def cross_site(host: str, headers: dict[str, str]) -> tuple[str, str] | None:
    """(header, why) when a browser sent this request from another site; None for same-origin or non-browser
    requests. Only a tokenless server needs it: a page elsewhere cannot add a bearer token."""
    origin = headers.get("origin")
    if origin is not None:
        try:
            parts = urlsplit(origin)
            same = parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
        except ValueError:
            same = False
        return None if same else ("origin", f"a write from another origin ({origin[:200]!r}) needs a token")
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return "sec-fetch-site", "a write from another site needs a token"
    return None


class Guard:
    """Bearer token on every route but /health and the lab page (ui.is_public), the body size limit
    (Content-Length or counted), and without a token: loopback Host names only, same-origin writes only."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int, allowed_hosts: Sequence[str] = (),
                 max_upload: int | None = None) -> None:
        self.app, self.token, self.max_body = app, token, max_body
        self.max_upload = max(max_upload or max_body, max_body)
        self.allowed_hosts = [h.strip().lower() for h in allowed_hosts]

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[str, str] | None:
        host = headers.get("host")
        if host is None:
            return None  # HTTP/1.0 without Host: not a browser
        server = scope.get("server")
        if not host_allowed(host, server[1] if server else None, self.allowed_hosts):
            return "host", (f"Host {host[:200]!r} is not served without a token: use 127.0.0.1 or localhost, "
                            "list it in ANGLE_LAB_ALLOWED_HOSTS, or set ANGLE_LAB_API_TOKEN")
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        return cross_site(host, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not self.token and (refused := self._refusal(scope, headers)) is not None:
            field, message = refused
            await problem(403, message, [{"field": field, "message": message}])(scope, receive, send)
            return
        if self.token and not ui.is_public(scope.get("path", "")):
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), self.token.encode()):
                await problem(401, "missing or wrong bearer token (Authorization: Bearer <ANGLE_LAB_API_TOKEN>)",
                              headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        upload = (scope.get("method"), scope.get("path", "").rstrip("/")) in UPLOAD_ROUTES
        limit = self.max_upload if upload else self.max_body
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await problem(413, f"request body larger than {limit} bytes",
                          [{"field": "body", "message": f"at most {limit} bytes"}])(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        await self.app(scope, limited, send)


