"""The Docker runtime's own logic on a :class:`~fake_engine.FakeEngine`, set up once: an
engine whose relays publish the port of a server that answers ``/ready`` (the ``engine``
fixture of this folder's conftest) and a :class:`DockerSandboxes` over it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fake_engine import FakeEngine
from gw_helpers import Serve, base_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.runtimes.docker_sandboxes import DockerSandboxes


async def _ready(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ready")


@contextlib.asynccontextmanager
async def ready_engine(serve: Serve) -> AsyncIterator[FakeEngine]:
    """A FakeEngine whose relays publish the port of a server (served while in the block)
    that answers /ready: every sandbox it starts becomes ready at once."""
    async with serve(Starlette(routes=[Route("/ready", _ready)])) as url:
        yield FakeEngine(ready_port=int(url.rsplit(":", 1)[1]))


def fake_sandboxes(
    engine: FakeEngine, tmp_path: Path, *, install: str = "fake", image_version: str = "test", **settings: Any
) -> DockerSandboxes:
    """The Docker runtime's sandboxes of installation ``install`` on ``engine``, reached on
    published ports; ``settings`` override :func:`gw_helpers.base_settings` (a 5 s start)."""
    settings.setdefault("start_timeout", 5.0)
    settings.setdefault("docker_relayless", False)  # the fake engine's sandboxes answer through relays
    made = base_settings(tmp_path, runtime="docker", install=install, **settings)
    return DockerSandboxes(made, engine, image_version=image_version, reach="published")
