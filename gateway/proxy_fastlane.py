"""``ProxyFastLane``: a small proxied request crosses one layer, not a dozen.

A bodiless HTTP request to a proxied route (``GET /conversation/{id}/agent-info``,
a file's status, a task's state), or one with a small body (a task's creation,
``POST /conversation/{id}/task?wait=true``), used to pass every layer of the app in turn:
FastAPI's own (server errors, telemetry, body limit, handled exceptions, exit
stack), the gateway's (request log, traffic metrics, subprotocol answer,
WebSocket quota, preview, request guard) and the router. Each added a call, and
those that watch the answer a ``send`` wrapper: together about a fifth of the
gateway's CPU on such a request. This layer sits in front of all of them
(:func:`install_fast_lane`) and serves that one kind of request itself, doing
exactly what those layers do for it:

- it takes a request only if it is HTTP, declares no body (no ``Transfer-Encoding``,
  no ``Content-Length`` but 0: the request guard would pass it) or a small one
  (:attr:`gateway.framing.Framing.small`: a declared length up to 64 KiB, not chunked,
  no ``Expect``; the proxy reads it whole), the app sets no body limit of its own
  (FastAPI's ``max_body_size``), is not a
  preview's (:func:`gateway.preview_admission.find_target` finds none and raises
  nothing) and fully matches a proxied route (:meth:`ProxyDispatch.match`, which sets
  the router's scope keys). Anything else (WebSockets, bodies, previews, the
  gateway's own routes, unknown paths) goes through the whole stack, unchanged;
- the request log's part: the ``X-Request-Id`` of the answer and
  :data:`gateway.requestlog.request_id` meanwhile; the ``convoy.access`` line when
  JSON logs are on (:func:`gateway.requestlog.log_access`);
- the traffic metrics' part: the request by route template, method and status,
  its duration, the request's body bytes as proxied bytes up and the answer's as
  proxied bytes down;
- the request guard's part, for a body: its sender is authenticated from the head
  before the route is bound; a failure is the guard's answer
  (:func:`gateway.guard.refusal`: JSON 401/403, counted and logged as ``unmatched``,
  as the guard answers before the router); proxied bodies are not capped;
- the route's part: :func:`gateway.routes.proxied.forward_request` (ownership,
  READY, the proxy's limits), with the caller authenticated here once (a bodiless
  request's failure raises what the route's dependency raises), also for the
  access line;
- the exception handlers' part: an exception is answered by the app's handler
  for its class (:func:`gateway.errors.install_error_handlers`: JSON
  ``{"detail": ...}``), found as Starlette finds it; one that has no handler is
  answered by the app's ``Exception`` handler (a logged JSON 500) and raised on
  to the server, as Starlette's server error layer does. Once an answer started,
  an exception is raised on as it is (the server drops the connection).

The subprotocol answer and the WebSocket quota concern WebSockets only,
FastAPI's exit stack and body limit (none is set) neither: none of them has
anything to do for such a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator, AuthError, Principal, http_error
from gateway.context import GatewayContext
from gateway.errors import GatewayError
from gateway.framing import framing_of
from gateway.guard import refusal
from gateway.metrics import GatewayMetrics
from gateway.metrics_http import HttpSeries
from gateway.preview_admission import find_target
from gateway.proxy_dispatch import ProxyDispatch, bind
from gateway.requestlog import incoming_id, log_access, request_id
from gateway.routes.proxied import ProxyRoute
from gateway.splice import SPLICED

_REQUEST_ID = b"x-request-id"
Handler = Callable[[Request, Exception], Any]
Found = tuple[ProxyRoute, dict[str, Any], GatewayContext]


class ProxyFastLane:
    """See the module docstring. ``app``: the whole stack, for every request not taken;
    ``max_body_bytes``: the request guard's (its refusals' framing); ``bodies``: whether
    small bodies are taken too."""

    def __init__(
        self,
        app: ASGIApp,
        dispatch: ProxyDispatch,
        handlers: dict[Any, Handler],
        authenticator: Authenticator,
        metrics: GatewayMetrics,
        log_requests: bool,
        max_body_bytes: int = 0,
        bodies: bool = False,
    ) -> None:
        self.app = app
        self._dispatch = dispatch
        self._handlers = handlers
        self._authenticator = authenticator
        self._series = HttpSeries(metrics)
        self._up = metrics.proxied_bytes.labels("up")
        self._down = metrics.proxied_bytes.labels("down")
        self._log_requests = log_requests
        self._max_body_bytes = max_body_bytes
        self._bodies = bodies

    def _take(self, scope: Scope) -> Found | None:
        """The proxied route, parameters and context of a request this lane takes (see the
        module docstring), else ``None``. The scope is not bound to the route yet."""
        if scope["type"] != "http":
            return None
        framing = framing_of(scope)
        if framing.has_body and not (self._bodies and framing.small):
            return None
        context = getattr(scope["app"].state, "gateway", None)
        if not isinstance(context, GatewayContext):
            return None
        try:
            if find_target(scope, context.settings) is not None:
                return None
        except GatewayError:  # a malformed preview id: the preview layer answers it
            return None
        found = self._dispatch.find(scope)
        return None if found is None else (*found, context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._take(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, params, context = found
        rid = incoming_id(scope)
        token = request_id.set(rid)
        began = time.perf_counter()
        status = 500  # an exception that escapes is answered 500
        started = False
        principal: Principal | None = None
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
            if framing_of(scope).has_body:
                try:  # the request guard's part: not one byte of the body before this
                    principal = context.auth.authenticate(HTTPConnection(scope))
                except AuthError as error:
                    await refusal(scope, error, self._max_body_bytes)(scope, receive, lane_send)
                    return
                bind(scope, route, params)
                receive = self._counted(receive)
            else:
                bind(scope, route, params)
                principal = _principal(context, scope)
            await self._dispatch.forward(route, scope, receive, lane_send, principal)
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
                log_access(self._authenticator, scope, rid, status, seconds, principal)
            request_id.reset(token)

    def _counted(self, receive: Receive) -> Receive:
        """``receive``, counting the body's bytes as proxied bytes up."""
        up = self._up

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                up.inc(len(message.get("body", b"")))
            return message

        return counted_receive

    def _handler(self, error: Exception) -> Handler | None:
        """The app's handler of ``error``: by status for an HTTPException, else by its class's
        MRO (``Exception`` last: the server error handler)."""
        if isinstance(error, HTTPException) and error.status_code in self._handlers:
            return self._handlers[error.status_code]
        for kind in type(error).__mro__:
            if kind in self._handlers:
                return self._handlers[kind]
        return None


def _principal(context: GatewayContext, scope: Scope) -> Principal:
    """The caller, or what the route's dependency raises (:func:`gateway.auth.current_principal`)."""
    try:
        return context.auth.authenticate(HTTPConnection(scope))
    except AuthError as error:
        raise http_error(error) from None


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
    max_body_bytes: int,
) -> ProxyFastLane:
    """Put a :class:`ProxyFastLane` in front of ``app``'s whole middleware stack (built here:
    call it once every middleware, route and exception handler is added). ``max_body_bytes``:
    the request guard's. Small bodies are taken unless the app sets a body limit of its own."""
    handlers = dict(app.exception_handlers)
    if 500 in handlers and Exception not in handlers:
        handlers[Exception] = handlers.pop(500)
    bodies = getattr(app, "max_body_size", None) is None
    lane = ProxyFastLane(
        app.build_middleware_stack(),
        dispatch,
        handlers,
        authenticator,
        metrics,
        log_requests,
        max_body_bytes,
        bodies,
    )
    app.middleware_stack = lane
    return lane
