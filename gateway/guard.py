"""``RequestGuard``: the ASGI layer in front of the gateway that a request body must pass.

Contracts, for every HTTP request that carries a body (a ``Content-Length``
other than 0, or a ``Transfer-Encoding``):

- The caller is authenticated first, from the headers alone (:class:`Authenticator`,
  the same rules as every route). A request that fails gets its 401 or 403 at
  once, JSON ``{"detail": ...}``, and not one byte of its body is read: an
  unauthenticated client cannot make the gateway buffer or parse anything.
- The gateway's own routes (``POST /conversation`` ...) take at most
  ``max_body_bytes``: a larger declared ``Content-Length`` is 413 before
  reading, a chunked body is counted as it arrives and cut off with 413.
- Routes that stream their body to an agent (:class:`~gateway.routes.proxied.ProxyRoute`:
  uploads, files, tasks, events) pass untouched: the agent enforces its own
  limits and the proxy never buffers.

A refused body is never read: a small one of known length (up to
``max_body_bytes``) is dropped by the server as it arrives and the connection
stays usable; a larger, chunked or ``Expect: 100-continue`` one gets
``Connection: close`` and the connection is closed instead. Requests without a
body, and WebSockets (whose routes authenticate right after the handshake),
pass through; their routes authenticate as before.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator, AuthError
from gateway.errors import error_response
from gateway.routes.proxied import ProxyRoute

_CLOSE = {"connection": "close"}


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == wanted:
            return value
    return None


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` of the request, ``None`` when it sends none."""
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def _has_body(scope: Scope) -> bool:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value != b"0"
    return False


def _streams_to_agent(scope: Scope) -> bool:
    """Whether the route that will serve ``scope`` forwards its body to an agent."""
    routes: list[BaseRoute] = scope["app"].router.routes
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return isinstance(route, ProxyRoute)
    return False


class RequestGuard:
    """See the module docstring. ``max_body_bytes`` caps the gateway's own bodies."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, max_body_bytes: int) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        try:
            self.authenticator.authenticate(HTTPConnection(scope))
        except AuthError as error:
            headers = self._unread_body_headers(scope)
            if error.status == 401:
                headers["www-authenticate"] = "Bearer"
            await error_response(error.status, error.detail, headers)(scope, receive, send)
            return
        if _streams_to_agent(scope):
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        too_large = f"request body larger than {limit} bytes"
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await error_response(413, too_large, _CLOSE)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large, headers=_CLOSE)
            return message

        await self.app(scope, counted, send)

    def _unread_body_headers(self, scope: Scope) -> dict[str, str]:
        """Headers for an answer that leaves the body unread: close unless the server
        can cheaply drop the rest (a known length within ``max_body_bytes``)."""
        declared = _declared_length(scope)
        expects = (_header(scope, b"expect") or b"").lower() == b"100-continue"
        if declared is None or declared > self.max_body_bytes or expects:
            return dict(_CLOSE)
        return {}
