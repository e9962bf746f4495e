"""The routes the gateway serves to its users, under ``/conversation/{id}``: an explicit list.

What is not here is never reachable through the gateway: ``/status`` and
``/openapi.json`` (the gateway's own calls), ``/health``, ``/ready`` and the
``/ws`` and ``/terminal/{id}`` sockets (relayed by the gateway's own WebSocket routes). The gateway
builds its proxied routes from these routers (:mod:`gateway.routes.proxied`).

The preview routes (``/port/{port}/{path}``, :data:`PREVIEW_ROUTER`) reach the user
too, but through the gateway's preview layer (:mod:`gateway.preview`: its own
auth by key or signed link, its own header rules); the gateway documents them
from the same declarations (:mod:`gateway.routes.ports`).
"""

from __future__ import annotations

from fastapi import APIRouter

from sandbox_agent.routes import events, files, ports, stdin, system, tasks, terminals

PROXIED_ROUTERS: tuple[APIRouter, ...] = (
    events.router,
    tasks.router,
    stdin.router,
    files.router,
    system.proxied,
    terminals.router,
)

PREVIEW_ROUTER: APIRouter = ports.router
