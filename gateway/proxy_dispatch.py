"""``ProxyDispatch``: the router's fast lane for proxied routes.

FastAPI finds a route by trying each one in turn (about 37 before the proxied
ones, through several layers of included routers): on a small proxied request
that search cost about a tenth of the gateway's CPU. This layer sits in front
of the router, inside every middleware and inside the exception handlers
(:func:`install_proxy_dispatch`), and finds a proxied route itself:

- by the first segment after ``/conversation/{conversation_id}/`` (``task``,
  ``file``, ``agent-info`` ...), then by each candidate's own path regex,
  parameter convertors and methods, exactly as the route's ``matches`` would;
- on a full match it sets what the router sets (``scope["route"]``,
  ``["endpoint"]``, ``["path_params"]``: the request guard, the metrics and the
  request log read them) and serves the request with the same function as the
  route itself (:func:`gateway.routes.proxied.forward_request`: auth,
  ownership, READY, the proxy's limits). Errors raise the same exceptions, so
  the same handlers give the same JSON bodies;
- anything else (another route, an unknown one, a wrong method, a trailing
  slash, a WebSocket) goes to FastAPI's router unchanged, with its 404, 405 and
  redirects.

Only the dispatch changes: the routes stay declared on the router, so the
OpenAPI document is the same. The proxied routes must not be shadowed by a
route registered before them (FastAPI takes the first full match); each
proxied path starts with a literal segment that no other route under the
prefix uses (checked at install, and by tests/gateway/test_proxy_dispatch.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path  # what the router matches on (root_path removed)
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import Principal
from gateway.routes.proxied import PREFIX, ProxyRoute, forward_request

_START = PREFIX.split("{", 1)[0]  # "/conversation/"


def first_segment(route_path: str) -> str | None:
    """The first segment after the conversation's id in ``route_path``, ``None`` when it has none."""
    if not route_path.startswith(_START):
        return None
    _, slash, rest = route_path[len(_START) :].partition("/")
    return rest.split("/", 1)[0] if slash else None


class ProxyDispatch:
    """See the module docstring. ``routes``: the proxied routes, in the router's order."""

    def __init__(self, app: ASGIApp, routes: Iterable[ProxyRoute], router: object = None) -> None:
        self.app = app
        self._router = router
        self._by_segment: dict[str, list[ProxyRoute]] = {}
        for route in routes:
            segment = first_segment(route.path)
            if segment is None or "{" in segment:
                raise ValueError(f"a proxied route needs a literal first segment: {route.path}")
            self._by_segment.setdefault(segment, []).append(route)

    @property
    def segments(self) -> frozenset[str]:
        return frozenset(self._by_segment)

    def match(self, scope: Scope) -> ProxyRoute | None:
        """The proxied route that fully matches ``scope`` (path and method); sets the router's
        scope keys when one does."""
        found = self.find(scope)
        if found is None:
            return None
        bind(scope, *found)
        return found[0]

    def find(self, scope: Scope) -> tuple[ProxyRoute, dict[str, Any]] | None:
        """The proxied route that fully matches ``scope`` and its path parameters (converted),
        ``None`` without one; the scope is left as it is (:func:`bind` sets the router's keys)."""
        route_path = get_route_path(scope)
        candidates = self._by_segment.get(first_segment(route_path) or "")
        if not candidates:
            return None
        method = scope["method"]
        for route in candidates:
            found = route.path_regex.match(route_path)
            if found is None or method not in (route.methods or ()):
                continue  # a path-only match is the router's to answer (405): it may find better
            params = {
                key: route.param_convertors[key].convert(value) for key, value in found.groupdict().items()
            }
            return route, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.match(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        await self.forward(route, scope, receive, send)

    async def forward(
        self,
        route: ProxyRoute,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal | None = None,
    ) -> None:
        """Answers the request of ``scope`` (which :meth:`match` found ``route`` for) with the agent's.
        ``principal``: the caller, when already authenticated (else the route authenticates)."""
        scope.setdefault("router", self._router)  # as the router would (url_for reads it)
        request = Request(scope, receive, send)
        response = await forward_request(request, route.upstream, route.download, principal)
        await response(scope, receive, send)


def bind(scope: Scope, route: ProxyRoute, params: dict[str, Any]) -> None:
    """Sets what the router sets on a match of ``route`` with ``params`` (the request guard, the
    metrics and the request log read them)."""
    scope["path_params"] = {**scope.get("path_params", {}), **params}
    scope["endpoint"] = route.endpoint
    scope["route"] = route


def install_proxy_dispatch(app: FastAPI, routes: Iterable[ProxyRoute]) -> ProxyDispatch:
    """Put a :class:`ProxyDispatch` of ``routes`` in front of ``app``'s router (call it once the
    routes are all included). Refuses routes that an earlier one under the prefix could shadow."""
    proxied = list(routes)
    dispatch = ProxyDispatch(app.router.middleware_stack, proxied, app.router)
    taken = {first_segment(path) for path in _other_paths(app, proxied)}
    shadowed = dispatch.segments & taken
    if shadowed:
        raise ValueError(f"proxied routes share first segments with other routes: {sorted(shadowed)}")
    app.router.middleware_stack = dispatch
    return dispatch


def _other_paths(app: FastAPI, proxied: list[ProxyRoute]) -> list[str]:
    """The paths of every HTTP route of ``app`` but ``proxied`` (through included routers)."""
    ids = {id(route) for route in proxied}
    found: list[str] = []
    pending: list[tuple[str, object]] = [("", route) for route in app.router.routes]
    while pending:
        prefix, route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's included router
        if included is not None:
            inner = prefix + getattr(getattr(route, "include_context", None), "prefix", "")
            pending.extend((inner, child) for child in included.routes)
        elif id(route) not in ids and getattr(route, "methods", None):
            found.append(prefix + str(getattr(route, "path", "")))
    return found
