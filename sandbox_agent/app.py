"""``create_app(settings) -> AgentApp``: the agent's routes wired to its components.

A plain Starlette app (:mod:`sandbox_agent.routes.serving` serves the declared
routes); FastAPI writes its OpenAPI document only when asked
(:meth:`AgentApp.openapi`), so it stays out of an idle sandbox's memory.
The lifespan starts the :class:`~sandbox_agent.agent.Agent` (reload the state
dir, READY on first start) and stops it (cancel tasks, flush logs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from sandbox_agent import __version__, errors
from sandbox_agent.activity import ActivityMeter
from sandbox_agent.agent import Agent
from sandbox_agent.bodylimit import BodyLimit
from sandbox_agent.claim import Claim
from sandbox_agent.routes import archive, claim, ports, serving, system, terminals, ws
from sandbox_agent.routes.decl import Router
from sandbox_agent.routes.proxied import PREVIEW, PROXIED
from sandbox_agent.settings import AgentSettings

# In matching order: the token-protected routes, then /health, /ready and /claim, then the sockets.
ROUTERS: tuple[Router, ...] = (
    system.router,
    archive.router,
    *PROXIED,
    PREVIEW,
    system.public,
    claim.router,
    ws.router,
    terminals.sockets,
    ports.sockets,
)
TITLE = "convoy sandbox agent"


class AgentApp(Starlette):
    """The agent's ASGI app; ``app.state.agent`` is its :class:`~sandbox_agent.agent.Agent`."""

    _document: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        """The agent's OpenAPI document, written by FastAPI from the declarations (first call only)."""
        if self._document is None:
            from sandbox_agent.routes.documented import openapi_document

            self._document = openapi_document(ROUTERS, TITLE, __version__)
        return self._document


def create_app(
    settings: AgentSettings, kept_claim: Claim | None = None, pool_secret: str | None = None
) -> AgentApp:
    """``kept_claim``: the claim the agent's CLI read before dropping root (see sandbox_agent.claim);
    ``pool_secret``: then, the spare's claim secret the CLI read (the token is the claim's)."""
    agent = Agent(settings)
    agent.kept_claim = kept_claim
    agent.pool_secret = pool_secret

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await agent.start()
        try:
            yield
        finally:
            await agent.stop()

    app = AgentApp(routes=serving.routes(ROUTERS), lifespan=lifespan)
    app.router.redirect_slashes = False
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
