"""``create_app(settings) -> FastAPI``: the agent's routes wired to its components.

The lifespan starts the :class:`~sandbox_agent.agent.Agent` (reload the state
dir, READY on first start) and stops it (cancel tasks, flush logs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sandbox_agent import __version__, errors
from sandbox_agent.agent import Agent
from sandbox_agent.bodylimit import BodyLimit
from sandbox_agent.protocol import ErrorBody
from sandbox_agent.routes import events, files, system, tasks, ws
from sandbox_agent.settings import AgentSettings

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 413, 422, 507)}


def create_app(settings: AgentSettings) -> FastAPI:
    agent = Agent(settings)

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
        responses=_ERRORS,  # type: ignore[arg-type]
        redirect_slashes=False,
        # the schema is served behind the token (routes/system.py); no browser docs in a sandbox
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.agent = agent
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_event_bytes)
    for module in (system, events, tasks, files):
        app.include_router(module.router)
    app.include_router(system.public)
    app.include_router(ws.router)
    return app
