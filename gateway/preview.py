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
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus
from uuid import UUID

import websockets
from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from gateway.auth import AuthError
from gateway.context import GatewayContext
from gateway.errors import GatewayError, InvalidInput, LinkRefused, NotFound, NotReady, error_response
from gateway.preview_links import LINK_PARAMETER
from gateway.proxy import Passage
from gateway.records import Record
from gateway.upstream import UpstreamPath, upstream_query
from gateway.wsproxy import UPSTREAM_MAX_QUEUE, close_client, proxy_frames
from sandbox_agent.protocol import (
    TOKEN_HEADER,
    WS_CLOSE_BAD_QUERY,
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_FORBIDDEN,
    WS_CLOSE_NOT_FOUND,
    WS_CLOSE_UNAUTHORIZED,
    WS_CLOSE_UPSTREAM_UNAVAILABLE,
)

log = logging.getLogger("convoy.gateway")

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
#: ``{port}-{id}.{domain}``, then an optional ``:port`` (the gateway's).
_PREVIEW_HOST = re.compile(
    rf"(?P<port>[0-9]{{1,6}})-(?P<id>{_UUID})\.(?P<domain>[A-Za-z0-9.-]+?)(?::[0-9]{{1,5}})?"
)
_PREVIEW_PATH = re.compile(r"/conversation/(?P<id>[^/]+)/port/(?P<port>[^/]+)(?P<rest>/.*)?", re.DOTALL)
_UPSTREAM = UpstreamPath("/port/{port}/{path:path}")
_SANDBOX_CSP = (b"content-security-policy", b"sandbox")


@dataclass(frozen=True)
class Target:
    """One request's preview: which port of which conversation, and where on it."""

    conversation_id: UUID
    port: int
    path: str  # on the sandbox's server, decoded, without its leading "/"
    host_based: bool

    @property
    def cookie_path(self) -> str:
        return "/" if self.host_based else f"/conversation/{self.conversation_id}/port/{self.port}/"


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidInput(f"port must be an integer from 1 to 65535, not {text[:20]!r}")
    return int(text)


def _header(scope: Scope, wanted: bytes) -> str:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return ""


def _cookies(scope: Scope) -> list[tuple[str, str]]:
    """Every ``name=value`` pair of the request's ``Cookie`` headers, raw (not unquoted)."""
    pairs = []
    for name, value in scope["headers"]:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, text = part.strip().partition("=")
                if key:
                    pairs.append((key, text))
    return pairs


class PreviewLayer:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def _target(self, scope: Scope, context: GatewayContext) -> Target | None:
        """The preview a request is for, ``None`` for the API; raises for a bad id or port."""
        host = _PREVIEW_HOST.fullmatch(_header(scope, b"host"))
        domains = {"localhost", context.settings.preview_domain.lower()}
        if host is not None and host["domain"].lower() in domains:
            path = str(scope["path"]).removeprefix("/")
            return Target(UUID(host["id"]), _port(host["port"]), path, host_based=True)
        found = _PREVIEW_PATH.fullmatch(str(scope["path"]))
        if found is None or (scope.get("method") == "POST" and found["rest"] == "/link"):
            return None
        try:
            conversation_id = UUID(found["id"])
        except ValueError:
            raise NotFound(f"conversation {found['id'][:40]} not found") from None
        rest = found["rest"] or ""
        return Target(conversation_id, _port(found["port"]), rest.removeprefix("/"), host_based=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = scope["type"] in ("http", "websocket")
        context = getattr(scope["app"].state, "gateway", None) if served else None
        if not isinstance(context, GatewayContext):
            await self.app(scope, receive, send)
            return
        try:
            target = self._target(scope, context)
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

    # --- who may pass -------------------------------------------------------------

    def _admit(
        self, conn: HTTPConnection, context: GatewayContext, target: Target
    ) -> tuple[Record, str | None]:
        """The conversation, and the cookie to set when a link token came in the query.
        Raises :class:`AuthError` or :class:`GatewayError` (see the module docstring)."""
        token = conn.query_params.get(LINK_PARAMETER)
        if token is not None:
            record, left = self._by_link(context, target, token)
            secure = "; Secure" if conn.url.scheme in ("https", "wss") else ""
            cookie = (
                f"{LINK_PARAMETER}={token}; Path={target.cookie_path}; Max-Age={left}; HttpOnly; "
                f"SameSite=Lax{secure}"
            )
            return record, cookie
        try:
            principal = context.auth.authenticate(conn)
        except AuthError:
            tokens = [value for name, value in _cookies(conn.scope) if name == LINK_PARAMETER]
            if not tokens:
                raise
            refusal: LinkRefused | None = None
            for candidate in tokens:
                try:
                    return self._by_link(context, target, candidate)[0], None
                except LinkRefused as error:
                    refusal = error
            assert refusal is not None
            raise refusal from None
        return context.manager.get(target.conversation_id, principal), None

    @staticmethod
    def _by_link(context: GatewayContext, target: Target, token: str) -> tuple[Record, int]:
        """The conversation and the seconds the link has left. Checks the signature (403),
        then the conversation (404), then the expiry (403)."""
        expires_at = context.links.check(token, target.conversation_id, target.port)
        record = context.manager.lookup(target.conversation_id)
        if record is None:
            raise NotFound(f"conversation {target.conversation_id} not found")
        return record, context.links.check_expiry(expires_at)

    @staticmethod
    def _app_cookies(scope: Scope, context: GatewayContext, target: Target) -> bytes | None:
        """The ``Cookie`` header the sandbox's server gets: the app's own, on a preview host only."""
        if not target.host_based:
            return None
        ours = {LINK_PARAMETER, context.settings.cookie_name}
        kept = [f"{name}={value}" for name, value in _cookies(scope) if name not in ours]
        return "; ".join(kept).encode("latin-1") if kept else None

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
            record, cookie = self._admit(request, context, target)
            handle = await manager.ready_handle(record)
            manager.touch(record)
            response = await context.proxy.forward(
                request,
                handle,
                path=_UPSTREAM.build({"port": target.port, "path": target.path}),
                activity=lambda: manager.connection(record),
                passage=self._passage(request, context, target, cookie),
            )
        except AuthError as error:
            headers = {"www-authenticate": "Bearer"} if error.status == 401 else {}
            response = error_response(error.status, error.detail, headers | _unread_body(scope))
        except GatewayError as error:
            response = error_response(error.status, error.detail, _unread_body(scope))
        await response(scope, receive, send)

    def _passage(
        self, request: Request, context: GatewayContext, target: Target, cookie: str | None
    ) -> Passage:
        ours = {LINK_PARAMETER.encode(), context.settings.cookie_name.encode()}
        query = _without_link(upstream_query(request))
        headers: list[tuple[bytes, bytes]] = [] if target.host_based else [_SANDBOX_CSP]
        if cookie is not None:
            headers += [(b"set-cookie", cookie.encode("latin-1")), (b"referrer-policy", b"no-referrer")]
        return Passage(
            cookie=self._app_cookies(request.scope, context, target),
            query=query,
            returned_cookie=(lambda value: value.split(b"=", 1)[0].strip() not in ours)
            if target.host_based
            else None,
            headers=tuple(headers),
        )

    # --- WebSocket ------------------------------------------------------------------

    async def _websocket(self, websocket: WebSocket, context: GatewayContext, target: Target) -> None:
        manager = context.manager
        try:
            record, _ = self._admit(websocket, context, target)
            handle = await manager.ready_handle(record)
        except (AuthError, GatewayError) as error:
            await _refuse(websocket, error)
            return
        query = _without_link(upstream_query(websocket))
        path = _UPSTREAM.build({"port": target.port, "path": target.path})
        url = f"ws{handle.base_url.removeprefix('http')}{path}" + (f"?{query}" if query else "")
        headers = {TOKEN_HEADER: handle.token}
        app_cookies = self._app_cookies(websocket.scope, context, target)
        if app_cookies:
            headers["cookie"] = app_cookies.decode("latin-1")
        origin = websocket.headers.get("origin")
        settings = context.settings
        try:
            upstream = await websockets.connect(
                url,
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


def _without_link(query: str) -> str:
    """The query less the link token (by its decoded name, as the query is read)."""
    if LINK_PARAMETER not in query and "%" not in query:
        return query
    return "&".join(
        part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) != LINK_PARAMETER
    )


def _unread_body(scope: Scope) -> dict[str, str]:
    """A refused request's body is never read: the connection closes after the answer."""
    has_body = _header(scope, b"transfer-encoding") or _header(scope, b"content-length") not in ("", "0")
    return {"connection": "close"} if has_body else {}


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
