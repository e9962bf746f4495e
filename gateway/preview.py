"""``PreviewLayer``: a request for a preview goes to the sandbox's port, never to the API.

An ASGI layer in front of the API's guard and router. It claims two kinds of request:

- host-based (recommended): a ``Host`` of ``{port}-{id}.{preview_domain}`` or
  ``{port}-{id}.localhost`` (any port): every path of that host is the preview's.
  Its own origin: what the sandbox serves cannot touch the API's. The API's own
  hosts, and their Host and Origin checks (:mod:`gateway.auth`), are untouched:
  a host is either a preview's, whole, or the API's.
- path-based: ``/conversation/{id}/port/{port}/{path}`` on any other host, except
  ``POST .../port/{port}/link`` (the API's route that makes links). Served on the
  API's origin, so every answer carries ``Content-Security-Policy: sandbox``
  (an opaque origin: no script, no same-origin access) and no cookie crosses,
  either way (a sandbox could otherwise set the gateway's ``convoy_key``).
  ``.../port/{port}`` without the ``/`` redirects (307) to it, so relative links work.

Who may pass, checked from the head alone, before any of the body is read:

1. a link token in the query (``?convoy_preview=``, :mod:`gateway.preview_links`):
   not valid for this id and port, or expired: 403; an unknown (deleted) id: 404.
   The answer sets it as a cookie scoped to this preview (host-only on a preview
   host, ``Path=/conversation/{id}/port/{port}/`` otherwise; ``HttpOnly``,
   ``SameSite=Lax``, ``Secure`` over TLS, ``Max-Age`` = what the link has left)
   and ``Referrer-Policy: no-referrer`` (the token is in that page's URL), so the
   page's sub-resources and later visits work without the query;
2. an API key, by the API's rules (:class:`~gateway.auth.Authenticator`), for the
   owner (or an admin): another principal's id is 404, as everywhere;
3. that cookie: as 1.

Neither the gateway's key (``Authorization``, ``?token=``, the ``convoy_key``
cookie) nor the link token (query or cookie) reaches the sandbox; on a preview
host the app's own cookies pass both ways, except a ``Set-Cookie`` of those two
names. WebSockets follow the same rules, refused after the handshake with
4401/4403/4404 (1008 for a bad port), relayed by :func:`gateway.wsproxy.proxy_frames`.
Those admitted by a key count against their principal's ``max_websockets_per_principal``
(:mod:`gateway.wsquota`); those admitted by a link, which have no principal, against
the same number per conversation (beyond: closed with 4429).
"""

from __future__ import annotations

import logging
from collections import Counter
from uuid import UUID

import websockets
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gateway.agent_transport import connect_websocket
from gateway.auth import AuthError
from gateway.context import GatewayContext
from gateway.errors import GatewayError, NotReady, error_response
from gateway.framing import framing_of
from gateway.preview_admission import Target, admit, app_cookies, find_target, without_link
from gateway.preview_links import LINK_PARAMETER
from gateway.proxy import Passage
from gateway.records import Record
from gateway.runtimes.base import SandboxHandle
from gateway.upstream import UpstreamPath, upstream_query
from gateway.wsproxy import UPSTREAM_MAX_QUEUE, close_client, proxy_frames
from sandbox_agent.protocol import (
    TOKEN_HEADER,
    WS_CLOSE_BAD_QUERY,
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_FORBIDDEN,
    WS_CLOSE_LIMIT_REACHED,
    WS_CLOSE_NOT_FOUND,
    WS_CLOSE_UNAUTHORIZED,
    WS_CLOSE_UPSTREAM_UNAVAILABLE,
)

log = logging.getLogger("convoy.gateway")

_UPSTREAM = UpstreamPath("/port/{port}/{path:path}")
_SANDBOX_CSP = (b"content-security-policy", b"sandbox")


class PreviewLayer:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._link_sockets: Counter[UUID] = Counter()  # open WebSockets admitted by a link

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = scope["type"] in ("http", "websocket")
        context = getattr(scope["app"].state, "gateway", None) if served else None
        if not isinstance(context, GatewayContext):
            await self.app(scope, receive, send)
            return
        try:
            target = find_target(scope, context.settings)
        except GatewayError as error:
            if scope["type"] == "http":
                await error_response(error.status, error.detail)(scope, receive, send)
            else:
                await _refuse(WebSocket(scope, receive, send), error)
            return
        if target is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send, context, target)
        else:
            await self._websocket(WebSocket(scope, receive, send), context, target)

    # --- HTTP -----------------------------------------------------------------------

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, context: GatewayContext, target: Target
    ) -> None:
        request = Request(scope, receive)
        if not target.host_based and not target.path and not str(scope["path"]).endswith("/"):
            query = scope.get("query_string", b"").decode("latin-1")
            location = f"{scope['path']}/" + (f"?{query}" if query else "")
            await RedirectResponse(location, status_code=307)(scope, receive, send)
            return
        manager = context.manager
        try:
            admitted = await admit(request, context, target)
            record = admitted.record
            handle = await manager.ready_handle(record)
            manager.touch(record)
            with manager.pausing.watching(record):  # paused through another gateway: resumed
                response = await context.proxy.forward(
                    request,
                    handle,
                    path=_UPSTREAM.build({"port": target.port, "path": target.path}),
                    activity=lambda: manager.connection(record),
                    passage=_passage(request, context, target, admitted.cookie),
                )
        except AuthError as error:
            headers = {"www-authenticate": "Bearer"} if error.status == 401 else {}
            response = error_response(error.status, error.detail, headers | _unread_body(scope))
        except GatewayError as error:
            response = error_response(error.status, error.detail, _unread_body(scope))
        except Exception:  # a bug must still answer JSON, as the API's handlers do
            log.exception("preview %s %s failed", scope["method"], scope["path"])
            response = error_response(500, "internal error in the gateway", _unread_body(scope))
        await response(scope, receive, send)

    # --- WebSocket ------------------------------------------------------------------

    async def _websocket(self, websocket: WebSocket, context: GatewayContext, target: Target) -> None:
        manager = context.manager
        try:
            admitted = await admit(websocket, context, target)
            record = admitted.record
            handle = await manager.ready_handle(record)
        except (AuthError, GatewayError) as error:
            await _refuse(websocket, error)
            return
        if not admitted.by_link:  # counted per principal, in front (gateway.wsquota)
            await self._relay(websocket, context, target, record, handle)
            return
        # Link holders have no principal: their sockets count per conversation, to the same cap.
        limit = context.settings.max_websockets_per_principal
        if self._link_sockets[record.id] >= limit:
            await websocket.accept()
            reason = f"at most {limit} WebSockets may be open at once per preview link holder"
            await close_client(websocket, WS_CLOSE_LIMIT_REACHED, reason)
            return
        self._link_sockets[record.id] += 1
        try:
            await self._relay(websocket, context, target, record, handle)
        finally:
            self._link_sockets[record.id] -= 1
            if not self._link_sockets[record.id]:
                del self._link_sockets[record.id]

    async def _relay(
        self,
        websocket: WebSocket,
        context: GatewayContext,
        target: Target,
        record: Record,
        handle: SandboxHandle,
    ) -> None:
        manager = context.manager
        query = without_link(upstream_query(websocket))
        path = _UPSTREAM.build({"port": target.port, "path": target.path})
        target_path = path + (f"?{query}" if query else "")
        headers = {TOKEN_HEADER: handle.token}
        cookies = app_cookies(websocket.scope, context.settings, target)
        if cookies:
            headers["cookie"] = cookies.decode("latin-1")
        origin = websocket.headers.get("origin")
        settings = context.settings
        try:
            upstream = await connect_websocket(
                handle.base_url,
                target_path,
                additional_headers=headers,
                subprotocols=[websockets.Subprotocol(p) for p in websocket.scope.get("subprotocols", [])]
                or None,
                origin=websockets.Origin(origin) if origin else None,
                max_size=settings.ws_max_message_bytes,
                max_queue=UPSTREAM_MAX_QUEUE,
                compression=None,
                open_timeout=settings.proxy_connect_timeout,
                ping_interval=None,
                proxy=None,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
            log.info("preview WebSocket to %s could not be opened: %r", target.conversation_id, error)
            await websocket.accept()
            await close_client(websocket, WS_CLOSE_UPSTREAM_UNAVAILABLE, "the sandbox could not be reached")
            return
        try:
            await websocket.accept(subprotocol=upstream.subprotocol)
            with manager.connection(record):
                await proxy_frames(
                    websocket,
                    upstream,
                    ended=lambda: manager.lookup(target.conversation_id) is not record,
                    on_frame=lambda: manager.touch(record),
                    settings=settings,
                )
        finally:
            await upstream.close()


def _passage(request: Request, context: GatewayContext, target: Target, cookie: str | None) -> Passage:
    """What crosses: the app's cookies on a preview host only; the sandbox CSP on the API's origin."""
    ours = {LINK_PARAMETER.encode(), context.settings.cookie_name.encode()}
    query = without_link(upstream_query(request))
    headers: list[tuple[bytes, bytes]] = [] if target.host_based else [_SANDBOX_CSP]
    if cookie is not None:
        headers += [(b"set-cookie", cookie.encode("latin-1")), (b"referrer-policy", b"no-referrer")]
    return Passage(
        cookie=app_cookies(request.scope, context.settings, target),
        query=query,
        returned_cookie=(lambda value: value.split(b"=", 1)[0].strip() not in ours)
        if target.host_based
        else None,
        headers=tuple(headers),
    )


def _unread_body(scope: Scope) -> dict[str, str]:
    """A refused request's body is never read: the connection closes after the answer."""
    return {"connection": "close"} if framing_of(scope).has_body else {}


async def _refuse(websocket: WebSocket, error: AuthError | GatewayError) -> None:
    if isinstance(error, AuthError):
        code = WS_CLOSE_UNAUTHORIZED if error.status == 401 else WS_CLOSE_FORBIDDEN
    elif isinstance(error, NotReady):
        code = WS_CLOSE_CONVERSATION_ENDED
    else:
        code = {
            403: WS_CLOSE_FORBIDDEN,
            404: WS_CLOSE_NOT_FOUND,
            422: WS_CLOSE_BAD_QUERY,
        }.get(error.status, WS_CLOSE_UPSTREAM_UNAVAILABLE)
    await websocket.accept()
    await close_client(websocket, code, error.detail)
