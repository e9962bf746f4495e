"""How the Docker runtime removes a conversation (gateway/runtimes/docker_removal.py), on a
FakeEngine: the sandbox is stopped before remove() returns, the rest follows in the
background, and nothing is left even when the gateway dies in between. No Docker needed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fake_docker import fake_sandboxes
from fake_engine import FakeEngine
from gw_helpers import make_spec

from gateway.errors import EngineError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxSpec, SandboxState


def _names(spec: SandboxSpec) -> cfg.Names:
    return cfg.Names.of("fake", spec.conversation_id)


def _owned(engine: FakeEngine, spec: SandboxSpec) -> set[str]:
    """The containers, volumes and networks of ``spec``'s conversation still there."""
    names = _names(spec)
    return (
        engine.names(str(spec.conversation_id))
        | ({names.volume} & set(engine.volumes_by_name))
        | ({f"network {names.network}"} if names.network in engine.networks_by_name else set())
    )


async def test_start_makes_four_objects_and_remove_is_idempotent(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    handle = await runtime.start(spec)
    names = _names(spec)
    assert _owned(engine, spec) == {names.sandbox, names.relay, names.volume, f"network {names.network}"}
    assert engine.containers_by_name[names.relay].networks == {names.network}
    assert await runtime.find(spec.conversation_id) == handle and await runtime.list() == [handle]

    assert await runtime.remove(spec.conversation_id) is True
    assert await runtime.find(spec.conversation_id) is None and await runtime.list() == []
    assert await runtime.remove(spec.conversation_id) is False, "waits for the first removal's end"
    assert _owned(engine, spec) == set()


async def test_remove_answers_once_the_sandbox_is_stopped_and_takes_the_rest_after(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await runtime.start(spec)
    names = _names(spec)
    engine.removal_pause = 0.05
    assert await runtime.remove(spec.conversation_id) is True
    assert engine.containers_by_name[names.sandbox].status == "exited", "nothing runs in it any more"
    assert ("end", "remove_container", names.relay) not in engine.timeline, "the rest is not awaited"
    assert await runtime.find(spec.conversation_id) is None

    await runtime.close()  # waits for the removals under way
    assert _owned(engine, spec) == set()
    timeline = engine.timeline
    # Both containers together, then the volume and the network together (each needs both gone).
    sandbox_gone = timeline.index(("end", "remove_container", names.sandbox))
    assert timeline.index(("begin", "remove_container", names.relay)) < sandbox_gone
    containers_gone = max(sandbox_gone, timeline.index(("end", "remove_container", names.relay)))
    for step in (("remove_volume", names.volume), ("remove_network", names.network)):
        assert timeline.index(("begin", *step)) > containers_gone
    volume_gone = timeline.index(("end", "remove_volume", names.volume))
    assert timeline.index(("begin", "remove_network", names.network)) < volume_gone


async def test_a_paused_sandbox_is_thawed_then_stopped(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await runtime.start(spec)
    names = _names(spec)
    await runtime.pause(spec.conversation_id)
    assert await runtime.remove(spec.conversation_id) is True
    calls = engine.calls
    assert calls.index(("unpause", names.sandbox)) < calls.index(("stop", names.sandbox))
    assert engine.containers_by_name[names.sandbox].status == "exited"
    await runtime.close()
    assert _owned(engine, spec) == set()


async def test_remove_takes_what_is_left_of_a_half_removed_conversation_at_once(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await runtime.start(spec)
    names = _names(spec)
    await engine.remove_container(names.sandbox)
    assert await runtime.find(spec.conversation_id) is None, "no sandbox container: absent"
    assert await runtime.remove(spec.conversation_id) is True, "the relay, volume and network were there"
    assert _owned(engine, spec) == set()
    assert await runtime.remove(spec.conversation_id) is False


async def test_a_failed_step_after_the_stop_is_left_to_the_orphan_clean_up(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    runtime.orphan_age = 0.0
    spec = make_spec()
    await runtime.start(spec)
    names = _names(spec)
    engine.fail_next("remove_container", EngineError("relay stuck"), names.relay)
    assert await runtime.remove(spec.conversation_id) is True
    assert await runtime.remove(spec.conversation_id) is False  # waits for the background's end
    assert names.sandbox not in engine.containers_by_name, "the sandbox went all the same"
    assert names.relay in engine.containers_by_name
    assert await runtime.cleanup_orphans() >= 1
    assert _owned(engine, spec) == set()


async def test_nothing_is_left_when_the_gateway_dies_right_after_remove_returns(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await runtime.start(spec)
    engine.removal_pause = 0.05
    assert await runtime.remove(spec.conversation_id) is True
    dying = [task for task in asyncio.all_tasks() if task.get_name().startswith("remove ")]
    assert dying, "the rest of the removal runs in the background"
    for task in dying:  # the gateway dies: its background work never happens
        task.cancel()
    await asyncio.gather(*dying, return_exceptions=True)
    assert _owned(engine, spec), "something was left to clean up"

    restarted = fake_sandboxes(engine, tmp_path)
    restarted.orphan_age = 0.0
    engine.removal_pause = 0.0
    listed = [handle for handle in await restarted.list() if handle.conversation_id == spec.conversation_id]
    assert [handle.state for handle in listed] in ([SandboxState.EXITED], []), "never seen running again"
    await restarted.cleanup_orphans()
    assert _owned(engine, spec) == set()
