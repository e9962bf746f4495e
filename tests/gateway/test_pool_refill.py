"""The pool's refills (gateway/pool.py) against a runtime whose starts the test releases: at most
``pool_refill_concurrency`` at once, none begun while a user waits on a cold start or a claim."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

import httpx
from gw_helpers import base_settings

from gateway.pool import Pool
from gateway.runtimes.base import ProgressCallback, SandboxHandle, SandboxSpec, SandboxState
from tests.helpers import eventually


class GatedRuntime:
    """Starts that end when the test says; everything else trivial."""

    name = "gated"
    enforces_egress = False

    def __init__(self) -> None:
        self.started: list[UUID] = []
        self.cancelled: list[UUID] = []
        self.removed: list[UUID] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        self.started.append(spec.conversation_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(spec.conversation_id)
            raise
        finally:
            self.in_flight -= 1
        return SandboxHandle(spec=spec, base_url="http://127.0.0.1:9", state=SandboxState.RUNNING)

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        return SandboxHandle(spec=spec, base_url=spare.base_url, state=SandboxState.RUNNING)

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        return None

    async def list(self) -> list[SandboxHandle]:
        return []

    async def remove(self, conversation_id: UUID) -> bool:
        self.removed.append(conversation_id)
        return True

    async def cleanup_orphans(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_refills_are_bounded_and_wait_for_the_users_cold_start(tmp_path: Path) -> None:
    settings = base_settings(tmp_path, pool_size=3, pool_refill_concurrency=1)
    runtime = GatedRuntime()
    async with httpx.AsyncClient() as http:
        pool = Pool(settings, runtime, http)
        try:
            async with pool.cold_start():  # a user waits on a cold start: no refill begins
                pool.start()
                await asyncio.sleep(0.3)
                assert runtime.started == [] and pool.status().starting == 0
            await eventually(lambda: _true(len(runtime.started) == 1))
            await asyncio.sleep(0.2)
            assert runtime.in_flight == 1, "one refill at a time"
            runtime.release.set()

            async def full() -> bool:
                return pool.status().ready == 3

            await eventually(full)
            assert runtime.most_in_flight == 1 and len(runtime.started) == 3
            status = pool.status()
            assert (status.size, status.starting, status.claimed_total, status.cold_total) == (3, 0, 0, 1)
        finally:
            await pool.close()
        assert pool.status().ready == 0


async def test_a_refill_under_way_at_shutdown_runs_to_its_end_then_its_spare_is_removed(
    tmp_path: Path,
) -> None:
    # Interrupted, a start may leave what the engine was still making (a create answered after
    # the cancel): so a shutdown lets it end, then removes the spare.
    settings = base_settings(tmp_path, pool_size=1)
    runtime = GatedRuntime()
    async with httpx.AsyncClient() as http:
        pool = Pool(settings, runtime, http)
        pool.start()
        await eventually(lambda: _true(runtime.in_flight == 1))
        closing = asyncio.create_task(pool.close())
        await asyncio.sleep(0.2)
        assert not closing.done() and runtime.cancelled == [], "the start under way is not interrupted"
        runtime.release.set()
        await closing
    assert runtime.cancelled == [] and runtime.removed == runtime.started and len(runtime.started) == 1
    assert pool.status().ready == 0


async def _true(value: bool) -> bool:
    return value
