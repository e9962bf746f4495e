"""The Docker runtime's pause and snapshot logic (gateway/runtimes/docker_lifecycle.py) on a
FakeEngine: clean-up spares paused sandboxes and snapshots and removes stale helpers, a
failed copy leaves no snapshot and thaws the sandbox, a paused sandbox is thawed before
it is stopped. No Docker needed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from fake_docker import fake_sandboxes
from fake_engine import FakeEngine
from gw_helpers import make_spec

from gateway.errors import EngineError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxState, SnapshotInfo
from gateway.runtimes.docker_lifecycle import snapshot_volume


def _info(conversation: object) -> SnapshotInfo:
    return SnapshotInfo(uuid4(), "alice", "a name", datetime.now(UTC), 0, conversation)  # type: ignore[arg-type]


async def test_cleanup_spares_paused_sandboxes_and_snapshots_and_removes_stale_helpers(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await runtime.start(spec)
    saved = await runtime.snapshot(spec.conversation_id, _info(spec.conversation_id))
    assert saved.size == 4096  # what the fake's helper printed (du)
    assert await runtime.snapshots() == [saved]
    assert (await runtime.pause(spec.conversation_id)).state is SandboxState.PAUSED
    await engine.create_container(
        "convoy-fake-helper-left", {"Labels": {cfg.INSTALL: "fake", cfg.ROLE: "helper"}}
    )
    engine.age("convoy-fake-helper-left", 3600)
    runtime.orphan_age = 60.0
    assert await runtime.cleanup_orphans() == 1
    assert "convoy-fake-helper-left" not in engine.containers_by_name
    assert (await runtime.find(spec.conversation_id)).state is SandboxState.PAUSED  # type: ignore[union-attr]
    assert await runtime.snapshots() == [saved]

    assert await runtime.remove(spec.conversation_id) is True
    calls = [method for method, _ in engine.calls]
    assert calls.index("unpause", calls.index("pause")) < calls.index("stop"), "thawed before the stop"
    await runtime.cleanup_orphans()
    assert await runtime.snapshots() == [saved], "a snapshot outlives its conversation"
    assert await runtime.remove_snapshot(saved.id) is True and await runtime.snapshots() == []


async def test_a_failed_copy_leaves_no_snapshot_and_thaws_the_sandbox(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await runtime.start(spec)
    engine.fail_next("start", EngineError("no space left on device"), name="helper")
    with pytest.raises(EngineError):
        await runtime.snapshot(spec.conversation_id, _info(spec.conversation_id))
    assert await runtime.snapshots() == []
    assert not any("helper" in name for name in engine.containers_by_name), "the helper was removed"
    assert (await runtime.find(spec.conversation_id)).state is SandboxState.RUNNING  # type: ignore[union-attr]

    engine.helper_exit = (1, "cp: cannot create regular file: No space left on device")
    info = _info(spec.conversation_id)
    with pytest.raises(EngineError, match="No space left"):
        await runtime.snapshot(spec.conversation_id, info)
    assert snapshot_volume("fake", info.id) not in engine.volumes_by_name
    await runtime.remove(spec.conversation_id)


async def test_another_gateways_start_half_way_is_starting_and_spared_until_orphan_age(
    engine: FakeEngine, tmp_path: Path
) -> None:
    """Two runtimes (gateways) on one engine: what one is starting, the other's listing calls
    STARTING and its clean-up leaves alone (the sandbox runs, its relay is created but not yet
    started; or only the relay is made yet), until it is older than ``orphan_age``."""
    starter, other = fake_sandboxes(engine, tmp_path), fake_sandboxes(engine, tmp_path)
    spec = make_spec()
    await starter.start(spec)
    names = cfg.Names.of("fake", spec.conversation_id)
    engine.containers_by_name[names.relay].status = "created"  # between the two starts
    found = await other.find(spec.conversation_id)
    assert found is not None and found.state is SandboxState.STARTING
    assert await other.cleanup_orphans() == 0
    engine.containers_by_name[names.sandbox].status = "exited"
    await engine.remove_container(names.sandbox)  # as if only the relay were made yet
    assert await other.cleanup_orphans() == 0 and names.relay in engine.names()
    engine.age(names.relay, other.orphan_age + 1)  # a start that died half-way, long ago
    assert await other.cleanup_orphans() >= 1
    assert engine.names(str(spec.conversation_id)) == set()
