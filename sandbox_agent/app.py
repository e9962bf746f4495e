"""``create_app(settings) -> FastAPI``: the agent's routes wired to its components.

The lifespan starts the :class:`~sandbox_agent.agent.Agent` (reload the state
dir, READY on first start) and stops it (cancel tasks, flush logs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sandbox_agent import __version__, errors
from sandbox_agent.activity import ActivityMeter
from sandbox_agent.agent import Agent
from sandbox_agent.bodylimit import BodyLimit
from sandbox_agent.claim import Claim
from sandbox_agent.routes import archive, claim, operation_id, ports, system, terminals, ws
from sandbox_agent.routes.proxied import PREVIEW_ROUTER, PROXIED_ROUTERS
from sandbox_agent.settings import AgentSettings

# In matching order: the token-protected routes, then /health, /ready and /claim, then the sockets.
_ROUTERS = (
    system.router,
    archive.router,
    *PROXIED_ROUTERS,
    PREVIEW_ROUTER,
    system.public,
    claim.router,
    ws.router,
    terminals.sockets,
    ports.sockets,
)


def create_app(settings: AgentSettings, kept_claim: Claim | None = None) -> FastAPI:
    """``kept_claim``: the claim the agent's CLI read before dropping root (see sandbox_agent.claim)."""
    agent = Agent(settings)
    agent.kept_claim = kept_claim

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await agent.start()
        try:
            yield
        finally:
            await agent.stop()

    app = FastAPI(
        title="convoy sandbox agent",
        version=__version__,
        lifespan=lifespan,
        # The routers' routes, as built when their modules were imported. include_router
        # would build every route a second time (dependants, validators and serializers
        # for the router's context) on the first request: about 1 MB of an idle sandbox.
        routes=[route for router in _ROUTERS for route in router.routes],
        redirect_slashes=False,
        generate_unique_id_function=operation_id,  # for routes added later; the routers' have theirs
        # the schema is served behind the token (routes/system.py); no browser docs in a sandbox
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.agent = agent
    errors.install(app)
    # Uploads stream to disk under their own cap (a workspace archive too: the upload cap);
    # preview bodies stream to the sandbox's server.
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_event_bytes, exempt=("/upload/", "/port/", "/workspace-archive")
    )
    # Outermost: what any gateway of the installation sent counts for every gateway's reaper.
    app.add_middleware(ActivityMeter, meter=agent.activity)
    return app
