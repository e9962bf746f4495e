"""``create_app(settings, runtime=None) -> FastAPI``: the gateway, wired together.

Start-up: create the runtime (unless one is given), reconcile with it (adopt
live sandboxes and the pool's spares, remove exited ones and orphans), start the
pool's refills and the reap and reconcile loops. Shutdown, in order: stop
accepting conversations (and remove the pool's spares), close the proxied
WebSockets and the firehose, stop the background loops, close the HTTP client,
close the runtime (only one this app created). Sandboxes keep running: a new
gateway on the same runtime finds them again.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

from gateway import __version__
from gateway.asyncapi import asyncapi_document
from gateway.auth import Authenticator
from gateway.console import console_router
from gateway.context import GatewayContext
from gateway.conversations import ConversationManager
from gateway.errors import install_error_handlers
from gateway.firehose import Firehose
from gateway.guard import RequestGuard
from gateway.housekeeping import Housekeeper
from gateway.metrics import GatewayMetrics
from gateway.metrics_http import TrafficMetrics
from gateway.metrics_sources import CountedRuntime, start_watching
from gateway.preview import PreviewLayer
from gateway.preview_links import PreviewLinks
from gateway.proxy import Proxy
from gateway.proxy_dispatch import install_proxy_dispatch
from gateway.proxy_fastlane import install_fast_lane
from gateway.requestlog import RequestLog
from gateway.routes.conversations import router as conversations_router
from gateway.routes.lifecycle import router as lifecycle_router
from gateway.routes.observe import router as observe_router
from gateway.routes.ports import router as ports_router
from gateway.routes.proxied import ProxyRoute
from gateway.routes.proxied import router as proxy_router
from gateway.routes.templates import router as templates_router
from gateway.routes.ws import router as ws_router
from gateway.runtimes import create_runtime
from gateway.runtimes.base import Runtime
from gateway.settings import Settings
from gateway.snapshots import SnapshotManager
from gateway.status import StatusBus
from gateway.wsauth import SubprotocolAnswer
from gateway.wsquota import WebSocketQuota
from sandbox_agent.routes import operation_id

log = logging.getLogger("convoy.gateway")

#: FastAPI's own OpenTelemetry layer (0.16x) asks the global providers, through environment
#: look-ups, on every request whether it is on (6 us each; 0.1 us when off); the
#: gateway counts its traffic itself (gateway.metrics_http), so it is off where it exists.
_NO_OPENTELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)

_DESCRIPTION = """One sandbox per conversation, behind one API.

Authenticate with `Authorization: Bearer <key>`; browsers may use `?token=<key>`
or the `convoy_key` cookie (see `gateway.auth`). WebSocket channels are described
in [/asyncapi.json](/asyncapi.json)."""


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    auth = Authenticator(settings)  # malformed keys fail here, before serving
    metrics = GatewayMetrics()  # this app's own registry (issue 14)
    links = PreviewLinks(settings)  # one secret for the app's life (drawn here when unset)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        chosen = await create_runtime(settings) if runtime is None else runtime
        bus = StatusBus()
        proxy = Proxy(settings)
        # Issue 14: the manager sees the runtime through its metrics (starts, failures).
        manager = ConversationManager(settings, CountedRuntime(chosen, metrics), bus, proxy.client)
        metrics.count_conversations(
            lambda: [view.status for view in manager.page(None, manager.count() or 1).results]
        )
        watcher = start_watching(bus, metrics)
        metrics.pool_size.set_function(lambda: manager.pool.status().ready)
        manager.pool.on_miss = lambda: metrics.pool_claimed(False)
        firehose = Firehose(settings, manager, bus)
        housekeeper = Housekeeper(settings, manager)
        snapshots = SnapshotManager(settings, manager, proxy.client)
        app.state.gateway = GatewayContext(settings, auth, bus, proxy, manager, firehose, links, snapshots)
        await manager.reconcile()
        manager.pool.start()  # refills begin once the spares a previous gateway left are adopted
        housekeeper.start()
        log.info(
            "convoy gateway %s: runtime %s, auth %s, %d conversations found",
            __version__,
            chosen.name,
            auth.mode,
            manager.count(),
        )
        try:
            yield
        finally:
            log.info("shutdown 1/5: no new conversations; starts in progress are cancelled, spares removed")
            await manager.close()
            log.info("shutdown 2/5: closing the firehose and its upstreams")
            await firehose.close()
            log.info("shutdown 3/5: stopping the reap and reconcile loops")
            await housekeeper.stop()
            watcher.cancel()
            log.info("shutdown 4/5: closing the HTTP client")
            await proxy.close()
            log.info("shutdown 5/5: closing the runtime %s (sandboxes keep running)", chosen.name)
            if owned:
                await chosen.close()

    app = FastAPI(
        title="convoy gateway",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,  # operationIds are the function names
        **_NO_OPENTELEMETRY,
    )
    install_error_handlers(app)
    # No body is read before its sender is authenticated; the gateway's own are capped (gateway.guard).
    app.add_middleware(RequestGuard, authenticator=auth, max_body_bytes=settings.max_body_bytes)
    # In front of the guard: a preview's requests (its host, or /conversation/{id}/port/...) never
    # reach the API; it admits them by key or signed link from the head alone (gateway.preview).
    app.add_middleware(PreviewLayer)
    app.add_middleware(WebSocketQuota)  # max_websockets_per_principal
    app.add_middleware(SubprotocolAnswer)  # browsers send their key as a subprotocol (gateway.wsauth)
    # Issue 14, outermost: every request is counted and gets its id, refusals included.
    app.state.metrics = metrics
    app.add_middleware(TrafficMetrics, metrics=metrics)
    app.add_middleware(RequestLog, authenticator=auth, log_requests=settings.log_format == "json")
    app.include_router(conversations_router)
    app.include_router(lifecycle_router)
    app.include_router(templates_router)
    app.include_router(proxy_router)
    app.include_router(ports_router)
    app.include_router(ws_router)
    app.include_router(observe_router)  # issue 14: /metrics, /conversation/{id}/usage
    app.include_router(console_router(settings))

    @app.get("/health", tags=["gateway"], summary="The gateway answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/asyncapi.json", tags=["gateway"], summary="AsyncAPI 3.0 document of the WebSocket channels")
    async def asyncapi(request: Request) -> dict[str, Any]:
        host = request.headers.get("host")
        return asyncapi_document(host, secure=request.url.scheme == "https")

    # Proxied routes are found without FastAPI's route-by-route search (gateway.proxy_dispatch).
    dispatch = install_proxy_dispatch(
        app, [route for route in proxy_router.routes if isinstance(route, ProxyRoute)]
    )
    # Last, once every layer is added: a bodiless proxied request skips them (gateway.proxy_fastlane).
    log_requests = settings.log_format == "json"
    install_fast_lane(app, dispatch, auth, metrics, log_requests, settings.max_body_bytes)
    return app
