"""gateway/reconciling.py on the memory runtime: an ERROR conversation stays ERROR, with its
reason, whatever the overlapping sync rounds (the sync and reconcile loops) and the other
gateways of the installation do with its sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from gw_helpers import base_settings, make_spec

from gateway import reconciling
from gateway.conversations import ConversationManager
from gateway.runtimes.base import SandboxHandle, SandboxState
from gateway.runtimes.memory import MemoryRuntime
from gateway.settings import Settings
from gateway.status import StatusBus
from sandbox_agent.protocol import ConversationStatus
from tests.helpers import eventually


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path, runtime="memory")


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[MemoryRuntime]:
    subject = MemoryRuntime(settings)
    yield subject
    await subject.close()


async def _exited(runtime: MemoryRuntime, conversation_id: UUID) -> SandboxHandle:
    async def check() -> SandboxHandle | None:
        found = await runtime.find(conversation_id)
        return found if found is not None and found.state is SandboxState.EXITED else None

    return await eventually(check, what="the sandbox EXITED")


@asynccontextmanager
async def _exited_under_a_manager(
    settings: Settings, runtime: MemoryRuntime
) -> AsyncIterator[tuple[ConversationManager, UUID, SandboxHandle]]:
    """A READY conversation known to a manager whose sandbox has just EXITED (not yet seen by a
    sync): the manager, the conversation's id and the EXITED handle."""
    spec = make_spec()
    await runtime.start(spec)
    async with httpx.AsyncClient() as http:
        manager = ConversationManager(settings, runtime, StatusBus(), http)
        await manager.reconcile()
        await runtime.stop_agent(spec.conversation_id)
        yield manager, spec.conversation_id, await _exited(runtime, spec.conversation_id)


async def test_an_exited_sandbox_fails_once_whatever_rounds_overlap(
    settings: Settings, runtime: MemoryRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rounds at once: the second lists the EXITED sandbox, the first removes it while the
    second looks again. The second must not take that removal for a delete elsewhere."""
    monkeypatch.setattr(reconciling, "_REMOVAL_SETTLE", 0.0)
    async with _exited_under_a_manager(settings, runtime) as (manager, conversation_id, exited):
        # The second settle look waits for the first round's removal: the order the race needs.
        removed = asyncio.Event()
        looks = 0
        real_find, real_remove = runtime.find, runtime.remove

        async def find(wanted: UUID) -> SandboxHandle | None:
            nonlocal looks
            looks += 1
            if looks == 2:
                await removed.wait()
            return await real_find(wanted)

        async def remove(wanted: UUID) -> bool:
            try:
                return await real_remove(wanted)
            finally:
                removed.set()

        monkeypatch.setattr(runtime, "find", find)
        monkeypatch.setattr(runtime, "remove", remove)
        await asyncio.wait_for(asyncio.gather(manager.sync(), manager.sync()), 30)

        record = manager.lookup(conversation_id)
        assert record is not None, "the ERROR conversation was taken for one deleted elsewhere"
        assert record.status is ConversationStatus.ERROR and record.reason == exited.reason
        assert await real_find(conversation_id) is None, "the exited sandbox is removed"


async def test_a_failed_conversation_is_not_ended_by_a_later_round(
    settings: Settings, runtime: MemoryRuntime
) -> None:
    """Once ERROR (its sandbox removed), later rounds and a peer's view leave it ERROR."""
    async with _exited_under_a_manager(settings, runtime) as (manager, conversation_id, _):
        await manager.sync()
        record = manager.lookup(conversation_id)
        assert record is not None and record.status is ConversationStatus.ERROR
        manager._end_elsewhere(record, reconciling.GONE_ELSEWHERE)  # what a vanished sandbox triggers
        await manager.sync()
        assert manager.lookup(conversation_id) is record and record.status is ConversationStatus.ERROR


def test_a_crash_is_told_from_a_removal() -> None:
    spec = make_spec()

    def exited(**how: object) -> SandboxHandle:
        return SandboxHandle(spec=spec, base_url="", state=SandboxState.EXITED, reason="ended", **how)  # type: ignore[arg-type]

    assert reconciling.crashed(exited(oom_killed=True, exit_code=137))
    assert reconciling.crashed(exited(exit_code=1))
    for stopped in (None, 0, 137, 143):
        assert not reconciling.crashed(exited(exit_code=stopped)), stopped


def _crashing(runtime: MemoryRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime reports every EXITED sandbox as killed for memory (as Docker would)."""
    real_list, real_find = runtime.list, runtime.find

    def oom(handle: SandboxHandle) -> SandboxHandle:
        if handle.state is not SandboxState.EXITED:
            return handle
        return replace(handle, oom_killed=True, exit_code=137, reason="the sandbox ran out of memory (OOM)")

    async def listed() -> list[SandboxHandle]:
        return [oom(handle) for handle in await real_list()]

    async def found(conversation_id: UUID) -> SandboxHandle | None:
        handle = await real_find(conversation_id)
        return None if handle is None else oom(handle)

    monkeypatch.setattr(runtime, "list", listed)
    monkeypatch.setattr(runtime, "find", found)


async def test_a_crash_is_an_error_on_every_gateway_until_reaped(
    settings: Settings, runtime: MemoryRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One gateway fails it at once and leaves the sandbox to the next clean-up; the others'
    listings see the crash meanwhile, a gateway that never knew it adopts it as ERROR, and
    none of them takes the clean-up's removal for a delete elsewhere."""
    monkeypatch.setattr(reconciling, "_REMOVAL_SETTLE", 3600.0)  # a crash needs no second look
    spec = make_spec()
    await runtime.start(spec)
    async with httpx.AsyncClient() as http:
        first, second = (ConversationManager(settings, runtime, StatusBus(), http) for _ in range(2))
        for manager in (first, second):
            await manager.reconcile()
        await runtime.stop_agent(spec.conversation_id)
        await _exited(runtime, spec.conversation_id)
        _crashing(runtime, monkeypatch)

        await asyncio.wait_for(first.sync(), 30)
        assert await runtime.find(spec.conversation_id) is not None, "left for the clean-up"
        await asyncio.wait_for(second.sync(), 30)
        late = ConversationManager(settings, runtime, StatusBus(), http)  # a gateway started now
        await asyncio.wait_for(late.sync(), 30)
        asking = ConversationManager(settings, runtime, StatusBus(), http)
        asked = await asking.discover(spec.conversation_id)  # a request to one that never listed it
        await first.reconcile()
        assert await runtime.find(spec.conversation_id) is None, "the clean-up removed it"
        for manager in (first, second, late, asking):
            await asyncio.wait_for(manager.sync(), 30)
        records = [m.lookup(spec.conversation_id) for m in (first, second, late, asking)]
        assert asked is records[-1]
        for record in records:
            assert record is not None and record.status is ConversationStatus.ERROR, record
            assert record.reason is not None and "OOM" in record.reason

        monkeypatch.setattr(settings, "error_retention", 0.0)
        await second.reap()
        await second.sync()
        assert second.lookup(spec.conversation_id) is None, "reaped, and not adopted again"
