"""The routes the gateway serves to its users, under ``/conversation/{id}``: an explicit list.

What is not here is never reachable through the gateway: ``/status`` and
``/openapi.json`` (the gateway's own calls), ``/health``, ``/ready`` and the
``/ws`` and ``/terminal/{id}`` sockets (relayed by the gateway's own WebSocket routes). The gateway
builds its proxied routes from these routers (:mod:`gateway.routes.proxied`, through
``PROXIED_ROUTERS``: the same declarations as FastAPI routers).

The preview routes (``/port/{port}/{path}``, :data:`PREVIEW_ROUTER`) reach the user
too, but through the gateway's preview layer (:mod:`gateway.preview`: its own
auth by key or signed link, its own header rules); the gateway documents them
from the same declarations (:mod:`gateway.routes.ports`).
"""

from __future__ import annotations

from typing import Any

from sandbox_agent.routes import events, files, ports, stdin, system, tasks, terminals
from sandbox_agent.routes.decl import Router

PROXIED: tuple[Router, ...] = (
    events.router,
    tasks.router,
    stdin.router,
    files.router,
    system.proxied,
    terminals.router,
)

PREVIEW: Router = ports.router


def __getattr__(name: str) -> Any:
    """``PROXIED_ROUTERS`` and ``PREVIEW_ROUTER``: :data:`PROXIED` and :data:`PREVIEW` as
    FastAPI routers (:mod:`sandbox_agent.routes.documented`), built when first asked for:
    the gateway declares its routes from them; the agent's process never asks."""
    if name not in ("PROXIED_ROUTERS", "PREVIEW_ROUTER"):  # e.g. __path__, which imports look for
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from sandbox_agent.routes.documented import api_router

    if name == "PROXIED_ROUTERS":
        return tuple(api_router(router) for router in PROXIED)
    return api_router(PREVIEW)
