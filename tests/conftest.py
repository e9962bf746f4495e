"""Fixtures shared by every test package.

``serve`` runs an ASGI app on a real uvicorn server bound to 127.0.0.1 on a
free port, inside the test's event loop, and stops it afterwards: streaming
and WebSocket behaviour is tested over real sockets, never a fake transport.

Tests marked ``docker`` run only where a Docker engine answers and the sandbox
image exists (``scripts/build-images``); elsewhere they are skipped with the
reason. CI has both, so they run there.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import uvicorn

from tests.helpers import free_port

SANDBOX_IMAGE = os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")

# The Docker runtime's agent sockets (gateway.runtimes.docker_sockets): a socket's path has at
# most 107 bytes and pytest's temporary directories are too long for one, so every gateway of
# the session (its subprocesses too, through the environment) keeps them in one short directory.
if "CONVOY_DOCKER_SOCKET_DIR" not in os.environ:
    os.environ["CONVOY_DOCKER_SOCKET_DIR"] = tempfile.mkdtemp(prefix="cv-")
    atexit.register(shutil.rmtree, os.environ["CONVOY_DOCKER_SOCKET_DIR"], ignore_errors=True)


@contextlib.asynccontextmanager
async def run_uvicorn(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1; yields its base URL (``http://127.0.0.1:PORT``)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
def serve() -> Callable[..., AbstractAsyncContextManager[str]]:
    """``async with serve(app) as base_url: ...``"""
    return run_uvicorn


def _docker_skip_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client"
    try:
        subprocess.run(["docker", "info"], check=True, capture_output=True, timeout=15)
    except (subprocess.SubprocessError, OSError):
        return "no Docker engine answers"
    found = subprocess.run(["docker", "image", "inspect", SANDBOX_IMAGE], capture_output=True, timeout=15)
    if found.returncode != 0:
        return f"image {SANDBOX_IMAGE} missing: run scripts/build-images"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _skip_swarm_where_it_cannot_run(items)
    docker_items = [item for item in items if "docker" in item.keywords]
    if not docker_items:
        return
    reason = _docker_skip_reason()
    if reason is None:
        return
    if os.environ.get("CONVOY_REQUIRE_DOCKER") == "1":
        raise pytest.UsageError(f"Docker tests required but cannot run: {reason}")
    for item in docker_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def _skip_swarm_where_it_cannot_run(items: list[pytest.Item]) -> None:
    """Tests marked ``swarm`` need root and the harness's tools (tests/gateway/swarm_cluster.py);
    ``CONVOY_REQUIRE_SWARM=1`` makes a missing one an error, not a skip."""
    swarm_items = [item for item in items if "swarm" in item.keywords]
    if not swarm_items:
        return
    from tests.gateway.swarm_cluster import skip_reason

    for item in swarm_items:  # the first one builds the session's cluster (minutes under load)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900))
    reason = _docker_skip_reason() or skip_reason()
    if reason is None:
        return
    if os.environ.get("CONVOY_REQUIRE_SWARM") == "1":
        raise pytest.UsageError(f"swarm tests required but cannot run: {reason}")
    for item in swarm_items:
        item.add_marker(pytest.mark.skip(reason=reason))
