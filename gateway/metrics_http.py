"""``TrafficMetrics``: a pure ASGI middleware counting what crosses the gateway.

- HTTP: every request by route template (``scope["route"].path`` once the
  router matched it: ``/conversation/{conversation_id}/file/{path}``, never the
  raw path; ``unmatched`` when no route did), method and status, with its
  duration until the last byte of the answer was handed to the server.
- Proxied routes (:class:`~gateway.routes.proxied.ProxyRoute`): the request's
  body bytes (up) and the answer's (down).
- WebSockets: open sockets by kind from the handshake's accept until the route
  returns, and frames sent to the client (events relayed).

It wraps ``send``/``receive`` and nothing else: it adds a counter increment per
message and never buffers.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import HTTP_METHODS, GatewayMetrics
from gateway.routes.proxied import ProxyRoute
from gateway.splice import SPLICED

#: WebSocket route templates by kind (anything else is ``other``, or ``terminal`` by its path).
_WEBSOCKET_KINDS = {
    "/conversation/{conversation_id}": "follow",
    "/conversation/": "create",
    "/conversation": "create",
    "/firehose/": "firehose",
}


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def websocket_kind(template: str) -> str:
    kind = _WEBSOCKET_KINDS.get(template)
    if kind is not None:
        return kind
    return "terminal" if "/terminal" in template else "other"


class HttpSeries:
    """The request count and duration series of ``metrics``, by (route, method, status)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        # The series of each (route, method, status) seen, looked up once: labels() costs more
        # than the increment. Bounded, as the label values are.
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """One answered request of ``scope`` (its route matched or not), ``seconds`` long."""
        method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
        labels = (route_template(scope), method, str(status))
        series = self._series.get(labels)
        if series is None:
            metrics = self.metrics
            series = metrics.http_requests.labels(*labels), metrics.http_seconds.labels(*labels)
            self._series[labels] = series
        series[0].inc()
        series[1].observe(seconds)


class TrafficMetrics:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._up = metrics.proxied_bytes.labels("up")
        self._down = metrics.proxied_bytes.labels("down")
        self._http_series = HttpSeries(metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 by the server
        proxied: bool | None = None
        up, down = self._up, self._down

        def is_proxied() -> bool:
            nonlocal proxied
            if proxied is None:
                proxied = isinstance(scope.get("route"), ProxyRoute)
            return proxied

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and is_proxied():
                up.inc(len(message.get("body", b"")))
            return message

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and is_proxied():
                down.inc(len(message.get("body", b"")) + message.get(SPLICED, 0))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            self._http_series.observe(scope, status, time.perf_counter() - began)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind: str | None = None
        metrics = self.metrics
        relayed = None

        async def counted_send(message: Message) -> None:
            nonlocal kind, relayed
            if message["type"] == "websocket.send" and relayed is not None:
                relayed.inc()
            elif message["type"] == "websocket.accept" and kind is None:
                kind = websocket_kind(route_template(scope))
                relayed = metrics.events_relayed.labels(kind)
                metrics.websockets_open.labels(kind).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            if kind is not None:
                metrics.websockets_open.labels(kind).dec()
