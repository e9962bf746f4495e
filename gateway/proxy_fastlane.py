"""``ProxyFastLane``: a small proxied request crosses one layer, not a dozen.

A bodiless HTTP request to a proxied route (``GET /conversation/{id}/agent-info``,
a file's status, a task's state) used to pass every layer of the app in turn:
FastAPI's own (server errors, telemetry, body limit, handled exceptions, exit
stack), the gateway's (request log, traffic metrics, subprotocol answer,
WebSocket quota, preview, request guard) and the router. Each added a call, and
those that watch the answer a ``send`` wrapper: together about a fifth of the
gateway's CPU on such a request. This layer sits in front of all of them
(:func:`install_fast_lane`) and serves that one kind of request itself, doing
exactly what those layers do for it:

- it takes a request only if it is HTTP, declares no body (no ``Transfer-Encoding``,
  no ``Content-Length`` but 0: the request guard would pass it), is not a
  preview's (:func:`gateway.preview_admission.find_target` finds none and raises
  nothing) and fully matches a proxied route (:meth:`ProxyDispatch.match`, which sets
  the router's scope keys). Anything else (WebSockets, bodies, previews, the
  gateway's own routes, unknown paths) goes through the whole stack, unchanged;
- the request log's part: the ``X-Request-Id`` of the answer and
  :data:`gateway.requestlog.request_id` meanwhile; the ``convoy.access`` line when
  JSON logs are on (:func:`gateway.requestlog.log_access`);
- the traffic metrics' part: the request by route template, method and status,
  its duration, and the answer's body bytes as proxied bytes down (a bodiless
  request has no bytes up);
- the route's part: :func:`gateway.routes.proxied.forward_request` (auth,
  ownership, READY, the proxy's limits);
- the exception handlers' part: an exception is answered by the app's handler
  for its class (:func:`gateway.errors.install_error_handlers`: JSON
  ``{"detail": ...}``), found as Starlette finds it; one that has no handler is
  answered by the app's ``Exception`` handler (a logged JSON 500) and raised on
  to the server, as Starlette's server error layer does. Once an answer started,
  an exception is raised on as it is (the server drops the connection).

The subprotocol answer and the WebSocket quota concern WebSockets only, the
request guard bodies only, FastAPI's exit stack and body limit neither: none of
them has anything to do for such a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator
from gateway.context import GatewayContext
from gateway.errors import GatewayError
from gateway.metrics import GatewayMetrics
from gateway.metrics_http import HttpSeries
from gateway.preview_admission import find_target
from gateway.proxy_dispatch import ProxyDispatch
from gateway.requestlog import incoming_id, log_access, request_id
from gateway.routes.proxied import ProxyRoute
from gateway.splice import SPLICED

_REQUEST_ID = b"x-request-id"
Handler = Callable[[Request, Exception], Any]


def _bodiless(scope: Scope) -> bool:
    """Whether the request declares no body (what the request guard lets pass unread)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return False
    return True


class ProxyFastLane:
    """See the module docstring. ``app``: the whole stack, for every request not taken."""

    def __init__(
        self,
        app: ASGIApp,
        dispatch: ProxyDispatch,
        handlers: dict[Any, Handler],
        authenticator: Authenticator,
        metrics: GatewayMetrics,
        log_requests: bool,
    ) -> None:
        self.app = app
        self._dispatch = dispatch
        self._handlers = handlers
        self._authenticator = authenticator
        self._series = HttpSeries(metrics)
        self._down = metrics.proxied_bytes.labels("down")
        self._log_requests = log_requests

    def _route(self, scope: Scope) -> ProxyRoute | None:
        """The proxied route of a request this lane takes (see the module docstring), else ``None``."""
        if scope["type"] != "http" or not _bodiless(scope):
            return None
        context = getattr(scope["app"].state, "gateway", None)
        if not isinstance(context, GatewayContext):
            return None
        try:
            if find_target(scope, context.settings) is not None:
                return None
        except GatewayError:  # a malformed preview id: the preview layer answers it
            return None
        return self._dispatch.match(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        rid = incoming_id(scope)
        token = request_id.set(rid)
        began = time.perf_counter()
        status = 500  # an exception that escapes is answered 500
        started = False
        down = self._down

        async def lane_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID, rid.encode())]
            elif message["type"] == "http.response.body":
                down.inc(len(message.get("body", b"")) + message.get(SPLICED, 0))
            await send(message)

        try:
            await self._dispatch.forward(route, scope, receive, lane_send)
        except Exception as error:
            handler = None if started else self._handler(error)
            if handler is None:
                raise
            request = Request(scope, receive, lane_send)
            await (await _answer(handler, request, error))(scope, receive, lane_send)
            if handler is self._handlers.get(Exception):
                raise  # unhandled: the server hears of it, as behind Starlette's server error layer
        finally:
            seconds = time.perf_counter() - began
            self._series.observe(scope, status, seconds)
            if self._log_requests:
                log_access(self._authenticator, scope, rid, status, seconds)
            request_id.reset(token)

    def _handler(self, error: Exception) -> Handler | None:
        """The app's handler of ``error``: by status for an HTTPException, else by its class's
        MRO (``Exception`` last: the server error handler)."""
        if isinstance(error, HTTPException) and error.status_code in self._handlers:
            return self._handlers[error.status_code]
        for kind in type(error).__mro__:
            if kind in self._handlers:
                return self._handlers[kind]
        return None


async def _answer(handler: Handler, request: Request, error: Exception) -> Response:
    if is_async_callable(handler):
        answer: Coroutine[Any, Any, Response] = handler(request, error)
        return await answer
    response: Response = await run_in_threadpool(handler, request, error)
    return response


def install_fast_lane(
    app: FastAPI,
    dispatch: ProxyDispatch,
    authenticator: Authenticator,
    metrics: GatewayMetrics,
    log_requests: bool,
) -> ProxyFastLane:
    """Put a :class:`ProxyFastLane` in front of ``app``'s whole middleware stack (built here:
    call it once every middleware, route and exception handler is added)."""
    handlers = dict(app.exception_handlers)
    if 500 in handlers and Exception not in handlers:
        handlers[Exception] = handlers.pop(500)
    lane = ProxyFastLane(
        app.build_middleware_stack(), dispatch, handlers, authenticator, metrics, log_requests
    )
    app.middleware_stack = lane
    return lane
