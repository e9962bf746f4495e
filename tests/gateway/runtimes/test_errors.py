"""The runtime's errors are branches of the gateway's one error tree (gateway/errors.py):
one that escapes to a handler still answers JSON with its status."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from gw_helpers import Serve

from gateway import errors
from gateway.runtimes import base, docker_engine


def test_runtime_and_engine_errors_hang_from_gateway_error() -> None:
    assert issubclass(errors.RuntimeFailure, errors.GatewayError)
    for branch in (errors.SandboxStartError, errors.RuntimeUnavailable, errors.EngineError):
        assert issubclass(branch, errors.RuntimeFailure)
    assert issubclass(errors.EngineNotFound, errors.EngineError)
    assert not issubclass(errors.EngineNotFound, errors.NotFound), "an engine 404 is no client 404"
    # The seam's modules re-export the one definition, never a twin.
    assert base.RuntimeFailure is errors.RuntimeFailure and base.SandboxStartError is errors.SandboxStartError
    assert docker_engine.EngineNotFound is errors.EngineNotFound


async def test_an_escaped_runtime_error_answers_json_with_its_status(serve: Serve) -> None:
    app = FastAPI()
    errors.install_error_handlers(app)

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise errors.RuntimeUnavailable("the Docker engine does not answer")

    @app.get("/refused")
    async def refused() -> None:
        raise errors.EngineNotFound("No such container: x")

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        down = await client.get("/unavailable")
        assert (down.status_code, down.json()) == (503, {"detail": "the Docker engine does not answer"})
        missing = await client.get("/refused")
        assert missing.status_code == 500 and missing.json() == {"detail": "No such container: x"}
