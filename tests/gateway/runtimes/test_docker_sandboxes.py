"""The Docker runtime's own logic (gateway/runtimes/docker_sandboxes.py) on a FakeEngine:
subnet retry, orphan clean-up, what list/find say without an engine, and a failed
start leaving nothing (removal: test_docker_removal.py). No Docker needed."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import httpx
import pytest
from fake_docker import fake_sandboxes
from fake_engine import FakeEngine
from gw_helpers import base_settings, make_spec

from gateway.conversations import ConversationManager
from gateway.errors import EngineError, RuntimeUnavailable, SandboxStartError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxSpec, SandboxState
from gateway.runtimes.docker_sandboxes import DockerSandboxes
from gateway.status import StatusBus
from sandbox_agent.protocol import ConversationStatus
from tests.helpers import eventually


def _names(spec: SandboxSpec) -> cfg.Names:
    return cfg.Names.of("fake", spec.conversation_id)


def _owned(engine: FakeEngine, spec: SandboxSpec) -> set[str]:
    return engine.names(str(spec.conversation_id))


async def test_a_subnet_taken_meanwhile_is_retried_elsewhere(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    await runtime.start(make_spec())  # fills the runtime's cache of subnets in use
    engine.steal_subnets(2)  # another gateway on the engine takes the next two picks first
    spec = make_spec()
    await runtime.start(spec)
    stolen = [net for name, net in engine.networks_by_name.items() if name.startswith("other-gateway-")]
    assert len(stolen) == 2
    mine = engine.networks_by_name[_names(spec).network].subnets[0]
    assert all(not mine.overlaps(theirs) for net in stolen for theirs in net.subnets)
    assert mine.subnet_of(ipaddress.IPv4Network(runtime._relays._subnet_pool))


async def test_an_exhausted_subnet_pool_fails_the_start_and_leaves_nothing(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path, docker_subnet_pool="10.99.0.0/28")  # two /29s
    engine.steal_subnets(2)
    spec = make_spec()
    with pytest.raises(SandboxStartError, match="no free /29"):
        await runtime.start(spec)
    assert _owned(engine, spec) == set()
    assert sorted(engine.networks_by_name) == ["other-gateway-1", "other-gateway-2"], "theirs untouched"


async def test_a_refused_network_that_does_not_overlap_is_not_retried(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    engine.fail_next("create_network", EngineError("plugin not found"))
    spec = make_spec()
    with pytest.raises(SandboxStartError, match="plugin not found"):
        await runtime.start(spec)
    assert [call for call in engine.calls if call[0] == "create_network"] == [
        ("create_network", _names(spec).network)
    ]
    assert _owned(engine, spec) == set()


# (engine method, fragment of the name it fails on)
STEPS = [
    ("create_volume", ""),
    ("create_network", ""),
    ("create_container", "-relay"),
    ("create_container", ""),
    ("connect_network", "-relay"),
    ("start", ""),
    ("start", "-relay"),
]


@pytest.mark.parametrize(("method", "fragment"), STEPS)
@pytest.mark.parametrize("error", [EngineError("refused"), RuntimeUnavailable("engine gone")])
async def test_a_start_failing_at_any_step_removes_what_it_created(
    engine: FakeEngine, tmp_path: Path, method: str, fragment: str, error: Exception
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    engine.fail_next(method, error, name=fragment)  # "": the first such call (the sandbox's)
    expected = RuntimeUnavailable if isinstance(error, RuntimeUnavailable) else SandboxStartError
    with pytest.raises(expected, match=str(error)):
        await runtime.start(spec)
    assert _owned(engine, spec) == set()
    assert await runtime.list() == []


async def test_a_start_cancelled_during_its_slow_creates_leaves_nothing(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Cancelled while the engine creates the sandbox and its relay (which it finishes anyway):
    the start waits for them and removes both before it ends, not orphan_age later."""
    runtime = fake_sandboxes(engine, tmp_path)
    engine.create_pause = 0.3
    spec = make_spec()
    start = asyncio.create_task(runtime.start(spec))

    async def creating() -> bool:
        return ("create_container", _names(spec).relay) in engine.calls

    await eventually(creating, what="the creates under way")
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert _owned(engine, spec) == set(), "the start ended before removing what it made"
    await engine.settled()  # nothing was still being made behind its back either
    assert _owned(engine, spec) == set()
    assert await runtime.list() == []


@pytest.mark.parametrize("fragment", ["-relay", ""])
async def test_a_create_failing_while_the_other_is_slow_leaves_nothing(
    engine: FakeEngine, tmp_path: Path, fragment: str
) -> None:
    """One of the two concurrent creates fails at once, the other takes its time: the clean-up
    comes after both."""
    runtime = fake_sandboxes(engine, tmp_path)
    engine.create_pause = 0.3
    engine.fail_next("create_container", EngineError("refused"), name=fragment)
    spec = make_spec()
    with pytest.raises(SandboxStartError, match="refused"):
        await runtime.start(spec)
    await engine.settled()
    assert _owned(engine, spec) == set()


async def test_a_sandbox_that_exits_while_starting_says_why_and_leaves_nothing(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    engine.ready_port = 9  # nothing answers /ready
    engine.crash_on_start = (3, "Traceback ...\nImportError: no module named sandbox_agent\n")
    spec = make_spec()
    with pytest.raises(SandboxStartError) as failed:
        await runtime.start(spec)
    reason = str(failed.value)
    assert "exited before its agent was ready" in reason and "exited with code 3" in reason
    assert "ImportError: no module named sandbox_agent" in reason
    assert _owned(engine, spec) == set()


async def test_list_reports_exits_with_code_oom_and_log_lines(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    plain, starved, relayless = make_spec(), make_spec(), make_spec()
    for spec in (plain, starved, relayless):
        await runtime.start(spec)
    engine.exit(_names(plain).sandbox, 2, logs="bye\n")
    engine.exit(_names(starved).sandbox, 137, oom=True)
    engine.exit(_names(relayless).relay, 0)
    handles = {handle.conversation_id: handle for handle in await runtime.list()}
    assert all(handle.state is SandboxState.EXITED for handle in handles.values())
    assert handles[plain.conversation_id].exit_code == 2
    assert "code 2" in (handles[plain.conversation_id].reason or "")
    assert "bye" in (handles[plain.conversation_id].reason or "")
    assert handles[starved.conversation_id].oom_killed
    assert "out of memory" in (handles[starved.conversation_id].reason or "")
    assert handles[relayless.conversation_id].reason == "its relay container is gone"
    assert await runtime.cleanup_orphans() == 3
    assert engine.names("fake") == set()


async def test_cleanup_removes_orphans_and_leaves_the_living_and_the_young(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    living, dead, relay_only, bare, young_bare, unstarted = (make_spec() for _ in range(6))
    for spec in (living, dead, relay_only, bare, young_bare, unstarted):
        await runtime.start(spec)
    engine.exit(_names(dead).sandbox, 1)
    await engine.remove_container(_names(relay_only).sandbox)  # a relay without its sandbox
    for spec in (bare, young_bare):  # a volume and network without containers
        await engine.remove_container(_names(spec).sandbox)
        await engine.remove_container(_names(spec).relay)
    for name in (_names(bare).volume, _names(bare).network):
        engine.age(name, 3600)
    # A sandbox created but never started (another gateway's start under way, or one that died).
    unstarted_sandbox = engine.containers_by_name[_names(unstarted).sandbox]
    unstarted_sandbox.status = "created"
    # Another installation on the same engine: never touched.
    other = fake_sandboxes(engine, tmp_path, install="other", image_version="t", start_timeout=60.0)
    theirs = make_spec()
    await other.start(theirs)
    engine.exit(cfg.Names.of("other", theirs.conversation_id).sandbox, 1)

    # dead: 4 objects in one removal; relay_only: one; bare: its volume and network.
    assert await runtime.cleanup_orphans() == 1 + 1 + 2
    assert _owned(engine, living) == {_names(living).sandbox, _names(living).relay}
    assert _owned(engine, dead) == _owned(engine, relay_only) == _owned(engine, bare) == set()
    assert _names(young_bare).volume in engine.volumes_by_name, "too young to be an orphan"
    assert _names(unstarted).sandbox in engine.containers_by_name, "too young to be an orphan"
    assert len(_owned(engine, theirs)) == 2

    unstarted_sandbox.created -= 3600
    runtime.orphan_age = 0.0
    assert await runtime.cleanup_orphans() == 1 + 2
    assert _owned(engine, unstarted) == _owned(engine, young_bare) == set()
    assert [h.conversation_id for h in await runtime.list()] == [living.conversation_id]


async def test_cleanup_leaves_a_start_under_way_alone(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    runtime.orphan_age = 0.0
    spec = make_spec()
    removed: list[int] = []

    async def progress(phase: str) -> None:
        removed.append(await runtime.cleanup_orphans())

    handle = await runtime.start(spec, progress)
    assert removed == [0, 0, 0, 0, 0] and handle.state is SandboxState.RUNNING
    assert len(_owned(engine, spec)) == 2


async def test_list_and_find_without_an_engine_raise_and_reconcile_keeps_its_records(
    engine: FakeEngine, tmp_path: Path
) -> None:
    settings = base_settings(
        tmp_path, runtime="docker", install="fake", start_timeout=5.0, docker_relayless=False
    )
    runtime = DockerSandboxes(settings, engine, image_version="test", reach="published")
    spec = make_spec()
    await runtime.start(spec)
    async with httpx.AsyncClient() as http:
        manager = ConversationManager(settings, runtime, StatusBus(), http)
        await manager.reconcile()
        adopted = manager.lookup(spec.conversation_id)
        assert adopted is not None and adopted.status is ConversationStatus.READY

        engine.down = True
        for call in (runtime.list(), runtime.find(spec.conversation_id), runtime.cleanup_orphans()):
            with pytest.raises(RuntimeUnavailable):
                await call
        with pytest.raises(RuntimeUnavailable):
            await runtime.remove(spec.conversation_id)
        with pytest.raises(RuntimeUnavailable):
            await manager.reconcile()
        assert manager.lookup(spec.conversation_id) is adopted
        assert adopted.status is ConversationStatus.READY, "an engine that does not answer is no exit"

        engine.down = False
        await manager.reconcile()
        assert adopted.status is ConversationStatus.READY
        assert len(_owned(engine, spec)) == 2
