"""What a spare became, as the Docker runtime lists it (gateway/runtimes/docker_claims.py), on
Docker: the agent says it (``GET /claim`` over its socket), so a runtime whose engine cannot
read the claim file still lists a spare claimed through another runtime of the installation
as that conversation, and each listing asks again (a spare seen unclaimed is not taken for
one later); an agent that cannot answer (paused) is read from its claim file."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any
from uuid import UUID

import pytest

from gateway.errors import EngineError
from gateway.pool_refill import spare_spec
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle, SandboxState
from gateway.runtimes.docker import DockerRuntime
from gateway.runtimes.docker_token import CLAIM_FILE
from gateway.settings import Settings

pytestmark = pytest.mark.docker


def _by_id(handles: list[SandboxHandle]) -> dict[UUID, SandboxHandle]:
    return {handle.conversation_id: handle for handle in handles}


async def test_claims_are_learned_from_the_agents_and_from_the_file_of_one_paused(
    docker_settings: Settings, docker_runtime: DockerRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    maker = docker_runtime
    spare = await maker.start(spare_spec("default"))
    untouched = await maker.start(spare_spec("default"))
    other = await DockerRuntime.connect(docker_settings)  # another gateway of the installation
    try:
        read_file = other._engine.read_file

        async def no_claim_file(name: str, path: str) -> bytes | None:
            if path == CLAIM_FILE:
                raise EngineError("this engine reads no claim file")
            return await read_file(name, path)

        monkeypatch.setattr(other._engine, "read_file", no_claim_file)
        seen = _by_id(await other.list())
        assert seen[spare.conversation_id].spec.pool == "default", "a spare, by its own word"

        spec = dataclasses.replace(
            spare.spec, owner="alice", title="claimed", token=secrets.token_urlsafe(32), pool=None
        )
        await maker.claim(spare, spec)
        seen = _by_id(await other.list())
        claimed = seen[spare.conversation_id].spec
        assert claimed.pool is None, "claimed through the other runtime: no spare any more"
        assert (claimed.owner, claimed.title, claimed.token) == ("alice", "claimed", spec.token)
        assert seen[untouched.conversation_id].spec.pool == "default"
    finally:
        await other.close()

    # A paused agent answers nothing: a runtime that knows nothing yet reads its claim file.
    name = cfg.Names.of(docker_settings.install, spare.conversation_id).sandbox
    await maker._engine.pause(name)
    try:
        fresh = await DockerRuntime.connect(docker_settings)
        try:
            found: dict[UUID, Any] = _by_id(await fresh.list())
        finally:
            await fresh.close()
    finally:
        await maker._engine.unpause(name)
    paused = found[spare.conversation_id]
    assert paused.state is SandboxState.PAUSED
    assert (paused.spec.pool, paused.spec.owner, paused.spec.token) == (None, "alice", spec.token)
