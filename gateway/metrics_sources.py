"""Where the lifecycle metrics come from, without the lifecycle knowing of them.

- :class:`CountedRuntime` wraps the app's runtime: each start is timed and
  counted (cold), each :class:`RuntimeFailure` of any call counted by runtime,
  operation and error class. It is the runtime as far as anything above it can
  tell (every call is delegated; attributes it does not define are the
  wrapped runtime's).
- :func:`watch_status` follows the :class:`StatusBus`: conversations the gateway
  ended itself (idle, exited, out of memory, vanished) and those deleted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

from gateway.errors import RuntimeFailure
from gateway.metrics import GatewayMetrics, reap_reason
from gateway.runtimes.base import ProgressCallback, ResourceUsage, Runtime, SandboxHandle, SandboxSpec
from gateway.status import StatusBus
from sandbox_agent.protocol import ConversationStatus


class CountedRuntime:
    """``runtime`` with its starts and failures counted in ``metrics``."""

    def __init__(self, runtime: Runtime, metrics: GatewayMetrics) -> None:
        self.wrapped = runtime
        self._metrics = metrics
        self.name: str = runtime.name
        # The wrapped runtime's (a stand-in runtime of the tests that lacks it enforces nothing).
        self.enforces_egress: bool = getattr(runtime, "enforces_egress", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)

    def _failed(self, operation: str, error: RuntimeFailure) -> None:
        self._metrics.runtime_failed(self.name, operation, error)

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        began = time.monotonic()
        spare = spec.pool is not None  # a refill of the pool: no conversation's start
        try:
            handle = await self.wrapped.start(spec, progress)
        except BaseException as error:
            if isinstance(error, RuntimeFailure):
                self._failed("start", error)
            if not spare:
                self._metrics.start_finished("cold", error=error)
            raise
        if not spare:
            self._metrics.start_finished("cold", seconds=time.monotonic() - began)
        return handle

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """A warm start: the pool's spare claimed for ``spec`` (timed, counted as a pool hit)."""
        began = time.monotonic()
        try:
            handle = await self.wrapped.claim(spare, spec)
        except BaseException as error:
            if isinstance(error, RuntimeFailure):
                self._failed("claim", error)
            self._metrics.start_finished("warm", error=error)
            raise
        self._metrics.start_finished("warm", seconds=time.monotonic() - began)
        self._metrics.pool_claimed(True)
        return handle

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        try:
            return await self.wrapped.find(conversation_id)
        except RuntimeFailure as error:
            self._failed("find", error)
            raise

    async def list(self) -> list[SandboxHandle]:
        try:
            return await self.wrapped.list()
        except RuntimeFailure as error:
            self._failed("list", error)
            raise

    async def remove(self, conversation_id: UUID) -> bool:
        try:
            return await self.wrapped.remove(conversation_id)
        except RuntimeFailure as error:
            self._failed("remove", error)
            raise

    async def cleanup_orphans(self) -> int:
        try:
            return await self.wrapped.cleanup_orphans()
        except RuntimeFailure as error:
            self._failed("cleanup_orphans", error)
            raise

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        try:
            return await self.wrapped.usage(conversation_id)
        except RuntimeFailure as error:
            self._failed("usage", error)
            raise

    async def close(self) -> None:
        await self.wrapped.close()


async def watch_status(bus: StatusBus, metrics: GatewayMetrics) -> None:
    """Counts ended conversations from the bus until cancelled: a STOPPING that ends
    one was deleted or reaped (idle), an ERROR that ends a conversation that had
    been READY was an exit or a vanished sandbox (a failed start is counted by
    :class:`CountedRuntime`)."""
    ready: set[UUID] = set()
    with bus.subscribe() as notices:
        while True:
            notice = await notices.get()
            if notice.status is ConversationStatus.READY:
                ready.add(notice.conversation_id)
                continue
            if not notice.ended:
                continue
            was_ready = notice.conversation_id in ready
            ready.discard(notice.conversation_id)
            if notice.status is ConversationStatus.ERROR and not was_ready:
                continue  # a start that failed
            reason = reap_reason(notice.reason, failed=notice.status is ConversationStatus.ERROR)
            if reason is None:
                metrics.deleted.inc()
            else:
                metrics.reaped.labels(reason).inc()


def start_watching(bus: StatusBus, metrics: GatewayMetrics) -> asyncio.Task[None]:
    return asyncio.create_task(watch_status(bus, metrics), name="metrics: status notices")
