"""``RequestGuard``: no request body is read before its sender is authenticated,
and the gateway's own bodies are capped.

FastAPI reads and parses a route's body before it runs the route's
dependencies, authentication included: without this layer, an anonymous
100 MB JSON body to ``POST /conversation`` is buffered and parsed before its
401. The guard sits in front of the app. For every HTTP request that carries a
body (a ``Content-Length`` other than 0, or a ``Transfer-Encoding``):

- The caller is authenticated from the headers alone (:class:`Authenticator`,
  the same rules as every route). A request that fails gets its 401 or 403 at
  once, JSON ``{"detail": ...}``, and not one byte of its body is read.
- The gateway's own routes (``POST /conversation`` ...) take at most
  ``max_body_bytes``: a larger declared ``Content-Length`` is 413 before the
  first byte is read; a chunked body is counted as it arrives and cut off with
  413. Routes that stream their body to an agent
  (:class:`~gateway.routes.proxied.ProxyRoute`: uploads, files, tasks, events)
  are not capped here: the agent enforces its own limits and the proxy never
  buffers. The route is known once the router matched it (``scope["route"]``),
  so the cap is applied at the first read of the body.

A refused body of known length up to ``max_body_bytes`` is dropped by the
server as it arrives and the connection stays usable; a larger, chunked or
``Expect: 100-continue`` one is answered with ``Connection: close`` instead.
Requests without a body, and WebSockets (whose routes authenticate right after
the handshake), pass through; their routes authenticate as before.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator, AuthError
from gateway.errors import error_response
from gateway.framing import framing_of
from gateway.routes.proxied import ProxyRoute

_CLOSE = {"connection": "close"}


def refusal(scope: Scope, error: AuthError, max_body_bytes: int) -> Response:
    """The answer to the sender of a body who failed authentication (``error``): its JSON 401
    or 403, closing the connection unless the server can cheaply read past the unread body
    (a declared length up to ``max_body_bytes``, no ``Expect: 100-continue``). The fast lane
    (:mod:`gateway.proxy_fastlane`) answers with it too."""
    framing = framing_of(scope)
    declared = framing.declared
    droppable = declared is not None and declared <= max_body_bytes and not framing.continues
    headers = {} if droppable else dict(_CLOSE)
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    return error_response(error.status, error.detail, headers)


class RequestGuard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, max_body_bytes: int) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not framing_of(scope).has_body:
            await self.app(scope, receive, send)
            return
        try:
            self.authenticator.authenticate(HTTPConnection(scope))
        except AuthError as error:
            await refusal(scope, error, self.max_body_bytes)(scope, receive, send)
            return
        await self.app(scope, self._capped(scope, receive), send)

    def _capped(self, scope: Scope, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        too_large = HTTPException(413, f"request body larger than {limit} bytes", headers=_CLOSE)
        received = 0
        streams: bool | None = None  # known at the first read: the route is matched by then

        async def receive_capped() -> Message:
            nonlocal received, streams
            if streams is None:
                route = scope.get("route")
                # Proxied bodies stream to the agent (its limits); some routes bound their own.
                streams = isinstance(route, ProxyRoute) or getattr(route, "own_body_limit", False)
                declared = framing_of(scope).declared
                if not streams and declared is not None and declared > limit:
                    raise too_large
            message = await receive()
            if not streams and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
            return message

        return receive_capped
