"""The Runtime state contract (gateway/runtimes/base.py), checked for real on every runtime:
absent, STARTING/RUNNING while a start is under way, RUNNING once started, EXITED with
a reason when the agent ends, absent again after remove, cleanup_orphans or a removal
behind the runtime's back. Memory and process run everywhere; Docker where marked; Kubernetes
against the fake API server (fake_kube), whose pods run the agent as local processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from dockertools import adocker
from gw_helpers import base_settings, eventually, make_spec, read_text
from process_agents import kill_agents

from gateway.agent_transport import AgentTransport
from gateway.conversations import ConversationManager
from gateway.errors import (
    ClaimFailed,
    InvalidTemplate,
    SandboxStartError,
    SpareTaken,
    TemplateError,
    TemplateNotFound,
)
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import DEFAULT_TEMPLATE, ResourceLimits, Runtime, SandboxState, TemplateSource
from gateway.runtimes.claiming import claim_of
from gateway.runtimes.memory import MemoryRuntime
from gateway.runtimes.process import ProcessRuntime
from gateway.settings import Settings
from gateway.status import StatusBus
from sandbox_agent.protocol import CLAIM_SECRET_HEADER, TOKEN_HEADER, ConversationStatus
from tests.gateway.swarm_cluster import Cluster, kill_sandbox_task, swarm_settings


@dataclass
class Subject:
    """A runtime under test, and what only its kind knows how to do."""

    kind: str
    settings: Settings
    runtime: Runtime
    #: Ends the sandbox's agent (its process or container) behind the runtime's back.
    end_agent: Callable[[UUID], Awaitable[None]]
    #: Another gateway's runtime on the same installation.
    peer: Callable[[], AbstractAsyncContextManager[Runtime]]


def _memory(settings: Settings) -> Subject:
    runtime = MemoryRuntime(settings)
    # One process holds the installation: another gateway in it shares the instance.
    return Subject("memory", settings, runtime, runtime.stop_agent, lambda: nullcontext(runtime))


def _peers(
    connect: Callable[[Settings], Awaitable[Runtime]], settings: Settings
) -> Callable[[], AbstractAsyncContextManager[Runtime]]:
    """Another gateway's runtime: a new connection to the same installation, closed after."""

    @asynccontextmanager
    async def peer() -> AsyncIterator[Runtime]:
        other = await connect(settings)
        try:
            yield other
        finally:
            await other.close()

    return peer


def _process(settings: Settings) -> Subject:
    runtime = ProcessRuntime(settings)

    async def end_agent(conversation_id: UUID) -> None:
        meta = settings.state_dir / settings.install / str(conversation_id) / "meta.json"
        os.kill(json.loads(read_text(meta))["pid"], signal.SIGKILL)

    @asynccontextmanager
    async def peer() -> AsyncIterator[Runtime]:
        yield ProcessRuntime(settings)

    return Subject("process", settings, runtime, end_agent, peer)


async def _docker(settings: Settings) -> Subject:
    from gateway.runtimes.docker import DockerRuntime

    runtime = await DockerRuntime.connect(settings)

    async def end_agent(conversation_id: UUID) -> None:
        await adocker("kill", cfg.Names.of(settings.install, conversation_id).sandbox)

    return Subject("docker", settings, runtime, end_agent, _peers(DockerRuntime.connect, settings))


async def _kubernetes(settings: Settings, kube: Any) -> Subject:
    from gateway.runtimes.kubernetes import KubernetesRuntime

    runtime = await KubernetesRuntime.connect(settings)

    async def end_agent(conversation_id: UUID) -> None:
        await kube.kill_agent(kube.namespace, f"convoy-{conversation_id}")

    return Subject("kubernetes", settings, runtime, end_agent, _peers(KubernetesRuntime.connect, settings))


async def _swarm(settings: Settings, cluster: Cluster) -> Subject:
    from gateway.runtimes.swarm import SwarmRuntime

    runtime = await SwarmRuntime.connect(settings)

    async def end_agent(conversation_id: UUID) -> None:
        await asyncio.to_thread(kill_sandbox_task, cluster, settings.install, conversation_id)

    return Subject("swarm", settings, runtime, end_agent, _peers(SwarmRuntime.connect, settings))


@pytest.fixture(
    params=[
        "memory",
        "process",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("swarm", marks=pytest.mark.swarm),
        "kubernetes",
    ]
)
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    kind = str(request.param)
    if kind == "docker":
        settings: Settings = request.getfixturevalue("docker_settings")
        made = await _docker(settings)
    elif kind == "kubernetes":
        from kube_helpers import kube_settings

        kube = request.getfixturevalue("fake_kube")
        settings = kube_settings(kube, tmp_path)
        made = await _kubernetes(settings, kube)
    elif kind == "swarm":
        cluster = request.getfixturevalue("swarm_cluster")
        settings = swarm_settings(cluster, tmp_path / "state")
        made = await _swarm(settings, cluster)
    else:
        settings = base_settings(tmp_path / "state", runtime=kind, process_stop_grace=2.0)
        made = _memory(settings) if kind == "memory" else _process(settings)
    try:
        yield made
    finally:
        for handle in await made.runtime.list():
            await made.runtime.remove(handle.conversation_id)
        await made.runtime.close()
        kill_agents(settings.state_dir)


async def test_every_runtime_lists_its_default_template_first_and_never_removes_it(subject: Subject) -> None:
    runtime = subject.runtime
    templates = await runtime.templates()
    assert templates[0].name == DEFAULT_TEMPLATE
    assert [t.name for t in templates[1:]] == sorted(t.name for t in templates[1:])
    with pytest.raises(InvalidTemplate):
        await runtime.remove_template(DEFAULT_TEMPLATE)
    with pytest.raises(TemplateNotFound):
        await runtime.remove_template("no-such-template")
    with pytest.raises(TemplateError) as refused:  # a bad name, or no builds on this runtime at all
        await runtime.build_template("Not A Name", TemplateSource(image="debian"))
    assert refused.value.status in (400, 422)


async def test_an_unknown_sandbox_is_absent(subject: Subject) -> None:
    spec = make_spec()
    assert await subject.runtime.find(spec.conversation_id) is None
    assert spec.conversation_id not in {h.conversation_id for h in await subject.runtime.list()}
    assert await subject.runtime.remove(spec.conversation_id) is False


async def test_starting_then_running_then_removed(subject: Subject) -> None:
    runtime, spec = subject.runtime, make_spec()
    seen: list[tuple[str, SandboxState | None, int]] = []

    async def progress(phase: str) -> None:
        found = await runtime.find(spec.conversation_id)
        # A start under way is never taken for an orphan.
        seen.append((phase, found.state if found else None, await runtime.cleanup_orphans()))

    handle = await runtime.start(spec, progress)
    assert all(state in (None, SandboxState.STARTING, SandboxState.RUNNING) for _, state, _ in seen), seen
    assert seen[-1][1] is not None, f"listed by the time it waits for its agent: {seen}"
    assert all(removed == 0 for _, _, removed in seen), seen

    assert handle.state is SandboxState.RUNNING and handle.spec == spec
    found = await runtime.find(spec.conversation_id)
    assert found is not None and (found.state, found.spec, found.base_url) == (
        SandboxState.RUNNING,
        spec,
        handle.base_url,
    )
    assert [h.spec for h in await runtime.list() if h.conversation_id == spec.conversation_id] == [spec]
    async with httpx.AsyncClient(base_url=handle.base_url, timeout=30, transport=AgentTransport()) as client:
        assert (await client.get("/ready")).status_code == 200
        info = await client.get("/agent-info", headers={TOKEN_HEADER: spec.token})
        assert info.status_code == 200 and info.json()["conversation_id"] == str(spec.conversation_id)
        assert info.json()["template"] == spec.template == DEFAULT_TEMPLATE
    async with subject.peer() as peer:  # a restarted gateway sees the same
        again = await peer.find(spec.conversation_id)
        assert again is not None and again.state is SandboxState.RUNNING and again.spec == spec

    assert await runtime.remove(spec.conversation_id) is True
    assert await runtime.find(spec.conversation_id) is None
    assert spec.conversation_id not in {h.conversation_id for h in await runtime.list()}
    assert await runtime.remove(spec.conversation_id) is False


async def test_an_ended_agent_is_exited_with_a_reason_until_cleaned_up(subject: Subject) -> None:
    runtime, spec = subject.runtime, make_spec()
    await runtime.start(spec)
    await subject.end_agent(spec.conversation_id)

    async def exited() -> bool:
        found = await runtime.find(spec.conversation_id)
        return found is not None and found.state is SandboxState.EXITED

    await eventually(exited)
    handle = await runtime.find(spec.conversation_id)
    assert handle is not None and handle.spec == spec and handle.reason, handle
    if subject.kind in ("docker", "swarm"):
        assert handle.exit_code == 137 and not handle.oom_killed
    listed = [h for h in await runtime.list() if h.conversation_id == spec.conversation_id]
    assert [h.state for h in listed] == [SandboxState.EXITED], "stays listed until removed"
    async with subject.peer() as peer:
        seen = await peer.find(spec.conversation_id)
        assert seen is not None and seen.state is SandboxState.EXITED

    assert await runtime.cleanup_orphans() >= 1
    assert await runtime.find(spec.conversation_id) is None
    assert await runtime.remove(spec.conversation_id) is False


async def _absent(runtime: Runtime, conversation_id: UUID) -> bool:
    """Whether ``runtime`` finds no sandbox for ``conversation_id``. A removal through another
    runtime instance (a peer) shows here only once this one has learnt of it: at once where it
    asks its backend on every call, a moment later where it follows a watch (kubernetes: the
    DELETED event may arrive after the peer's remove has returned; see base.py)."""
    return await runtime.find(conversation_id) is None


async def test_a_sandbox_removed_behind_its_back_is_absent(subject: Subject) -> None:
    runtime, spec = subject.runtime, make_spec()
    await runtime.start(spec)
    async with subject.peer() as peer:
        assert await peer.remove(spec.conversation_id) is True
    await eventually(lambda: _absent(runtime, spec.conversation_id), what="the removal reaches us")
    assert spec.conversation_id not in {h.conversation_id for h in await runtime.list()}
    assert await runtime.remove(spec.conversation_id) is False


async def test_a_failed_start_leaves_the_sandbox_absent(subject: Subject) -> None:
    if subject.kind == "memory":
        pytest.skip("the memory runtime applies no env: nothing here breaks its agent")
    # The process runtime's agent reads PYTHONHOME; a Docker agent ignores the image's and the
    # caller's PYTHON* (-I: templates set their own), but cannot start with one pid (the init
    # holds it). Not a tiny memory limit there: an agent at its limit may thrash for a minute
    # instead of being killed. A swarm task does not start in 6 MiB.
    breaking: dict[str, ResourceLimits] = {}
    if subject.kind == "docker":
        breaking = {"limits": ResourceLimits(pids=1)}
    elif subject.kind == "swarm":
        breaking = {"limits": ResourceLimits(memory_bytes=6 * 1024 * 1024)}
    runtime, spec = subject.runtime, make_spec(env={"PYTHONHOME": "/nonexistent"}, **breaking)
    with pytest.raises(SandboxStartError) as failed:
        await runtime.start(spec)
    assert str(failed.value)
    assert await runtime.find(spec.conversation_id) is None
    assert spec.conversation_id not in {h.conversation_id for h in await runtime.list()}


async def test_a_cancelled_start_leaves_the_sandbox_absent(subject: Subject) -> None:
    runtime, spec = subject.runtime, make_spec()
    waiting = asyncio.Event()

    async def progress(phase: str) -> None:
        if phase.startswith("waiting"):
            waiting.set()

    start = asyncio.create_task(runtime.start(spec, progress))
    await waiting.wait()
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    assert await runtime.find(spec.conversation_id) is None
    assert spec.conversation_id not in {h.conversation_id for h in await runtime.list()}


async def test_reconcile_adopts_the_running_fails_the_exited_and_ends_the_vanished(subject: Subject) -> None:
    """What ConversationManager.reconcile relies on, on each runtime (see base.py). A vanished
    sandbox (removed by another gateway of the installation, or by hand) ends cleanly: its
    followers are told, and the id is unknown."""
    runtime = subject.runtime
    kept, ended, vanished = make_spec(), make_spec(), make_spec()
    for spec in (kept, ended, vanished):
        await runtime.start(spec)
    bus = StatusBus()
    async with httpx.AsyncClient(transport=AgentTransport()) as http:
        manager = ConversationManager(subject.settings, runtime, bus, http)
        await manager.reconcile()  # a gateway started on a runtime that already runs three
        for spec in (kept, ended, vanished):
            record = manager.lookup(spec.conversation_id)
            assert record is not None and record.status is ConversationStatus.READY and record.spec == spec

        await subject.end_agent(ended.conversation_id)

        async def exited() -> bool:
            found = await runtime.find(ended.conversation_id)
            return found is not None and found.state is SandboxState.EXITED

        await eventually(exited)
        reason = (await runtime.find(ended.conversation_id) or pytest.fail("gone")).reason
        async with subject.peer() as peer:
            await peer.remove(vanished.conversation_id)
        await eventually(lambda: _absent(runtime, vanished.conversation_id), what="the removal reaches us")
        with bus.subscribe(vanished.conversation_id) as notices:
            await manager.reconcile()
            end = notices.get_nowait()
        assert end.ended and end.status is ConversationStatus.STOPPING

        alive = manager.lookup(kept.conversation_id)
        assert alive is not None and alive.status is ConversationStatus.READY
        failed = manager.lookup(ended.conversation_id)
        assert failed is not None and failed.status is ConversationStatus.ERROR and failed.reason == reason
        assert await runtime.find(ended.conversation_id) is None, "an exited sandbox is removed"
        assert manager.lookup(vanished.conversation_id) is None


# --- usage (issue 14) ------------------------------------------------------------------

#: Writes 300 kB into the workspace, burns CPU for a while, then holds 64 MiB resident.
_BURN = (
    "import time\n"
    "open('ballast.bin', 'wb').write(b'x' * 300_000)\n"
    "end = time.process_time() + 0.6\n"
    "while time.process_time() < end:\n"
    "    pass\n"
    "held = bytearray(64 * 1024 * 1024)\n"
    "for at in range(0, len(held), 4096):\n"
    "    held[at] = 1\n"
    "time.sleep(120)\n"
)


async def test_usage_moves_when_a_task_burns_cpu_and_memory(subject: Subject) -> None:
    if subject.kind == "kubernetes":
        pytest.skip("the kubernetes runtime reads no metrics API: it measures nothing")
    if subject.kind == "swarm":
        pytest.skip("swarm measures usage on the manager's node only: tests/gateway/swarm has its test")
    runtime, spec = subject.runtime, make_spec()
    assert await runtime.usage(spec.conversation_id) is None  # absent
    handle = await runtime.start(spec)
    idle = await runtime.usage(spec.conversation_id)
    assert idle is not None and idle.disk_bytes == 0 and idle.disk_complete
    async with httpx.AsyncClient(base_url=handle.base_url, timeout=30, transport=AgentTransport()) as client:
        task = {"runnable": {"type": "Python", "code": _BURN}, "title": "burn"}
        created = await client.post("/task", json=task, headers={TOKEN_HEADER: spec.token})
        assert created.status_code == 201, created.text

    async def busy() -> object:
        found = await runtime.usage(spec.conversation_id)
        assert found is not None
        enough = (
            (found.cpu_seconds or 0) - (idle.cpu_seconds or 0) >= 0.5
            and (found.memory_bytes or 0) - (idle.memory_bytes or 0) >= 60 * 1024 * 1024
            and found.disk_bytes == 300_000
        )
        return found if enough else None

    used = await eventually(busy, what=f"the usage of a busy {subject.kind} sandbox moves")
    assert used.pids is not None and used.pids >= 1 + (idle.pids or 0)
    assert used.memory_peak_bytes is not None and used.memory_bytes is not None
    assert used.memory_peak_bytes >= used.memory_bytes
    if subject.kind == "docker":
        assert used.network_rx_bytes is not None and used.network_tx_bytes is not None
        # No internet, no egress: no network at all; the request came over the agent's socket.
        assert used.network_rx_bytes == 0 and used.network_tx_bytes == 0
    else:
        assert used.network_rx_bytes is None and used.network_tx_bytes is None  # unknowable: host's netns
    await runtime.remove(spec.conversation_id)
    assert await runtime.usage(spec.conversation_id) is None


# --- the pool: spares and their claim (Runtime.claim) -------------------------------------


async def test_a_spare_answers_only_its_claim_and_is_claimed_once(subject: Subject) -> None:
    runtime = subject.runtime
    spare_spec = make_spec(owner="", title="", pool="default")
    spare = await runtime.start(spare_spec)
    assert spare.state is SandboxState.RUNNING and spare.spec.pool == "default"
    secret = spare.spec.token  # the spec's (kubernetes: every warm pool sandbox shares one)
    conversation = make_spec(
        conversation_id=spare_spec.conversation_id, env={"GREETING": "hi"}, on_idle="pause"
    )
    async with httpx.AsyncClient(base_url=spare.base_url, timeout=30, transport=AgentTransport()) as client:
        assert (await client.get("/ready")).status_code == 200
        # Nothing but /ready and /claim, whatever it is sent: the secret is no token.
        for headers in ({}, {TOKEN_HEADER: secret}, {CLAIM_SECRET_HEADER: secret}):
            for path in ("/health", "/agent-info", "/event", "/task", "/file/", "/openapi.json"):
                answer = await client.get(path, headers=headers)
                assert answer.status_code in (401, 403), (path, headers, answer.status_code)
        body = claim_of(conversation).model_dump(mode="json")
        wrong = await client.post("/claim", json=body, headers={CLAIM_SECRET_HEADER: "not-the-secret"})
        assert wrong.status_code == 401
        assert (await client.post("/claim", json=body)).status_code == 401

        claimed = await runtime.claim(spare, conversation)
        assert claimed.state is SandboxState.RUNNING and claimed.spec == conversation
        found = await runtime.find(conversation.conversation_id)
        assert found is not None and found.spec == conversation
        assert [
            h.spec for h in await runtime.list() if h.conversation_id == conversation.conversation_id
        ] == [conversation]
        async with subject.peer() as peer:  # another (or a restarted) gateway sees the claim
            seen = await peer.find(conversation.conversation_id)
            assert seen is not None and seen.spec == conversation and seen.state is SandboxState.RUNNING
            with pytest.raises(SpareTaken):
                await peer.claim(spare, make_spec(conversation_id=spare_spec.conversation_id))
        with pytest.raises(SpareTaken):
            await runtime.claim(spare, conversation)

        token = {TOKEN_HEADER: conversation.token}
        assert (await client.get("/agent-info", headers={TOKEN_HEADER: secret})).status_code == 401
        events = (await client.get("/event", headers=token)).json()["results"]
        assert [(e["seq"], e["detail"]["type"], e["detail"]["status"]) for e in events] == [
            (1, "ConversationStatusUpdate", "READY")
        ]
        assert events[0]["conversation_id"] == str(conversation.conversation_id)
        assert (await client.get("/health")).status_code == 200
    assert await runtime.remove(conversation.conversation_id) is True
    assert await runtime.find(conversation.conversation_id) is None


async def test_a_spare_that_is_gone_cannot_be_claimed(subject: Subject) -> None:
    runtime = subject.runtime
    spare_spec = make_spec(owner="", title="", pool="default")
    spare = await runtime.start(spare_spec)
    await runtime.remove(spare_spec.conversation_id)
    with pytest.raises(ClaimFailed):
        await runtime.claim(spare, make_spec(conversation_id=spare_spec.conversation_id))


async def test_reconcile_adopts_no_start_under_way(subject: Subject) -> None:
    """A sandbox STARTING (here, or in another gateway) is not adopted as READY."""
    runtime, spec = subject.runtime, make_spec()
    states: list[SandboxState | None] = []
    async with httpx.AsyncClient(transport=AgentTransport()) as http:
        manager = ConversationManager(subject.settings, runtime, StatusBus(), http)

        async def progress(phase: str) -> None:
            if phase.startswith("waiting"):
                found = await runtime.find(spec.conversation_id)
                states.append(found.state if found else None)
                await manager.reconcile()
                if found is None or found.state is SandboxState.STARTING:
                    seen = manager.lookup(spec.conversation_id)  # watched, at most: never READY
                    assert seen is None or seen.status is ConversationStatus.STARTING

        await runtime.start(spec, progress)
        assert states, "the start waited for its agent"
        await manager.reconcile()
        record = manager.lookup(spec.conversation_id)
        assert record is not None, "a start done through another gateway is found"

        async def ready() -> bool:  # once its agent answers (the gateway asks /ready itself)
            return record.status is ConversationStatus.READY

        await eventually(ready)
