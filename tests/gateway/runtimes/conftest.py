"""Fixtures of the Docker runtime tests (real engine, real sandbox image).

Every test session uses an installation name of its own, so it never touches
another gateway's containers; at the end of the session nothing labelled with
it may remain (the session fixture removes what it finds, then fails).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest
from dockertools import docker_runtime_of, labelled, remove_labelled
from fake_docker import ready_engine
from fake_engine import FakeEngine
from fake_kube.fixture import fake_kube  # noqa: F401  (the fake Kubernetes API server)
from gw_helpers import Serve

from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings

SANDBOX_IMAGE = os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")


@pytest.fixture(scope="session")
def docker_install() -> Iterator[str]:
    """This session's installation name; asserts at the end that it left nothing behind."""
    install = f"test-{uuid4().hex[:10]}"
    yield install
    left = labelled(f"convoy.install={install}")
    remove_labelled(f"convoy.install={install}")
    assert not any(left.values()), f"the tests left Docker objects behind: {left}"


@pytest.fixture
def docker_settings(docker_install: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        install=docker_install,
        runtime="docker",
        docker_image=SANDBOX_IMAGE,
        docker_reach="published",
        start_timeout=120.0,
        docker_stop_grace=2.0,
        state_dir=tmp_path_factory.mktemp("convoy-state"),
        pool_size=0,  # no spares unless a test asks for them (gateway/pool.py): these count containers
    )


@pytest.fixture
async def docker_runtime(docker_settings: Settings) -> AsyncIterator[DockerRuntime]:
    """A DockerRuntime of this session's installation; removes every sandbox it holds afterwards."""
    async with docker_runtime_of(docker_settings, sweep_orphans=True) as runtime:
        yield runtime


@pytest.fixture
async def relayed_runtime(docker_settings: Settings) -> AsyncIterator[DockerRuntime]:
    """As ``docker_runtime``, but every sandbox on a network of its own with a relay (the design of
    conversations with internet or an egress list), whatever its spec."""
    relayed = docker_settings.model_copy(update={"docker_relayless": False})
    async with docker_runtime_of(relayed, sweep_orphans=True) as runtime:
        yield runtime


@pytest.fixture
async def engine(serve: Serve) -> AsyncIterator[FakeEngine]:
    """A FakeEngine (no Docker) whose sandboxes become ready at once (see fake_docker.py)."""
    async with ready_engine(serve) as fake:
        yield fake
