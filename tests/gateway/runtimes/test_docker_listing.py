"""How the Docker runtime reads a listing back at density (gateway/runtimes/docker_handles.py),
on a FakeEngine holding sandboxes another gateway of the installation left running: the
handles come in the engine's order, a sandbox already known costs no engine call but the
listing itself, one that exited is looked at again (its reason), and a gateway's sync over
more conversations than one slice of the event loop adopts each one and ends only the one
whose sandbox went. No Docker needed."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import httpx
from fake_docker import fake_sandboxes
from fake_engine import FakeEngine
from gw_helpers import base_settings, make_spec

from gateway.auth import Principal
from gateway.conversations import ConversationManager
from gateway.errors import NotFound
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxState
from gateway.runtimes.docker_sandboxes import DockerSandboxes
from gateway.status import StatusBus
from sandbox_agent.protocol import AGENT_TOKEN_ENV, ConversationStatus


async def _left_running(engine: FakeEngine, tmp_path: Path, count: int) -> list[UUID]:
    """``count`` network-less sandboxes of installation ``fake``, running, as a gateway that
    started them leaves them (their token in their Env: no file to read back)."""
    made: list[UUID] = []
    for _ in range(count):
        spec = make_spec()
        names = cfg.Names.of("fake", spec.conversation_id)
        labels = cfg.sandbox_labels(spec, "fake", "test") | {
            cfg.NETWORK: cfg.NO_NETWORK,
            cfg.AGENT_SOCKET_PATH: str(tmp_path / "sockets" / str(spec.conversation_id) / "agent.sock"),
        }
        config = {"Labels": labels, "Env": [f"{AGENT_TOKEN_ENV}={spec.token}"], "Image": "convoy-sandbox"}
        await engine.create_container(names.sandbox, config)
        await engine.start(names.sandbox)
        made.append(spec.conversation_id)
    return made


async def test_a_listing_keeps_the_engines_order_and_asks_only_for_the_listing_once_known(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    made = await _left_running(engine, tmp_path, 5)
    runtime = fake_sandboxes(engine, tmp_path)
    first = await runtime.list()
    assert [handle.conversation_id for handle in first] == made
    assert all(handle.state is SandboxState.RUNNING for handle in first)
    assert all(handle.base_url.startswith("http+unix://") for handle in first)

    engine.calls.clear()
    again = await runtime.list()
    assert again == first, "the same handles, built from what is known"
    assert [method for method, _ in engine.calls] == ["containers"]


async def test_a_sandbox_that_exited_is_looked_at_again_and_says_why(tmp_path: Path) -> None:
    engine = FakeEngine()
    made = await _left_running(engine, tmp_path, 3)
    runtime = fake_sandboxes(engine, tmp_path)
    await runtime.list()
    engine.exit(cfg.Names.of("fake", made[1]).sandbox, 3, logs="agent: out of luck\n")
    engine.calls.clear()
    handles = await runtime.list()
    assert [handle.state for handle in handles] == [
        SandboxState.RUNNING,
        SandboxState.EXITED,
        SandboxState.RUNNING,
    ]
    assert handles[1].exit_code == 3 and "out of luck" in (handles[1].reason or "")
    assert len([method for method, _ in engine.calls if method == "inspect"]) == 1, "the exited one only"


async def test_a_sync_over_hundreds_adopts_each_and_ends_only_the_one_gone(tmp_path: Path) -> None:
    engine = FakeEngine()
    made = await _left_running(engine, tmp_path, 450)  # more than a slice of the listing and the sync
    settings = base_settings(tmp_path, runtime="docker", install="fake", max_conversations=1000)
    runtime = DockerSandboxes(settings, engine, image_version="test", reach="published")
    async with httpx.AsyncClient() as http:
        manager = ConversationManager(settings, runtime, StatusBus(), http)
        await manager.reconcile()
        assert manager.count() == 450
        gone = made[300]
        await engine.remove_container(cfg.Names.of("fake", gone).sandbox)
        await manager.sync()
        assert manager.count() == 449
        principal = Principal(name=make_spec().owner)
        for conversation_id in (made[0], made[299], made[301], made[-1]):
            assert (await manager.get(conversation_id, principal)).status is ConversationStatus.READY
        try:
            await manager.get(gone, principal)
        except NotFound:
            pass
        else:
            raise AssertionError("the conversation whose sandbox went is still served")
        await manager.close()
