"""Keeping the pool full: the refills of :mod:`gateway.pool`, in the background.

Contracts:
- At most ``pool_refill_concurrency`` spares start at once; a refill waits to begin while a
  user waits on a cold start or a claim (:meth:`Refills.user_waiting`), and until
  :data:`SETTLE` seconds after a claim (the new conversation's first commands go first).
- Failed starts back off (doubling, up to :data:`MAX_BACKOFF` seconds); a runtime bug does
  not stop the refills.
- :meth:`Refills.close`: no refill begins; one under way runs to its end for up to
  :data:`CLOSE_WAIT` seconds (then it is cancelled: the runtime removes its half-started
  spare), and a spare made meanwhile is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

from gateway.errors import RuntimeFailure
from gateway.pool_spares import Spares
from gateway.runtimes.base import Runtime, SandboxSpec

log = logging.getLogger("convoy.gateway")

MAX_BACKOFF = 60.0
#: Seconds a refill waits after a claim: a container start slows down everything on a small
#: machine, and the first commands of the conversation just claimed are the ones users wait on.
SETTLE = 0.5
#: Seconds between two looks at the pool when nothing wakes the refill.
IDLE_LOOK = 5.0
#: Seconds a shutdown gives a spare's start under way to end (a container start takes a few).
CLOSE_WAIT = 10.0


def spare_spec(key: str) -> SandboxSpec:
    """A new spare of pool ``key``: it runs the template ``key``; its token is its claim secret."""
    return SandboxSpec(
        conversation_id=uuid4(),
        owner="",
        title="",
        token=secrets.token_urlsafe(32),
        created_at=datetime.now(UTC),
        pool=key,
        template=key,
    )


class Refills:
    def __init__(self, spares: Spares, runtime: Runtime, concurrency: int) -> None:
        self._spares = spares
        self._runtime = runtime
        self._users_waiting = 0  # cold starts and claims under way
        self._claimed_at = 0.0
        self._nobody_waiting = asyncio.Event()
        self._nobody_waiting.set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._under_way: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._failures = 0
        self._closing = False

    def wake(self) -> None:
        """Look at the pool now (a spare left it, or was adopted)."""
        self._wake.set()

    def claimed(self) -> None:
        """A spare was just claimed: refills settle first (:data:`SETTLE`)."""
        self._claimed_at = time.monotonic()

    @contextlib.asynccontextmanager
    async def user_waiting(self) -> AsyncIterator[None]:
        """A user waits on a start or a claim: no refill begins until none does."""
        self._users_waiting += 1
        self._nobody_waiting.clear()
        try:
            yield
        finally:
            self._users_waiting -= 1
            if self._users_waiting == 0:
                self._nobody_waiting.set()
            self._wake.set()

    def start(self) -> None:
        if self._supervisor is None and not self._closing:
            self._supervisor = asyncio.create_task(self._supervise(), name="pool refills")

    async def _supervise(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_LOOK)
            self._wake.clear()
            for key in self._spares.keys:
                while not self._closing and self._spares.missing(key) > 0:
                    await self._nobody_waiting.wait()  # a user waiting on a start or claim goes first
                    settle = self._claimed_at + SETTLE - time.monotonic()
                    if settle > 0:  # and so do the first commands of a conversation just claimed
                        await asyncio.sleep(settle)
                    await self._slots.acquire()
                    if self._closing or self._spares.missing(key) <= 0:
                        self._slots.release()
                        break
                    spec = spare_spec(key)
                    self._spares.starting[spec.conversation_id] = key
                    task = asyncio.create_task(self._make(spec, key), name=f"spare {spec.conversation_id}")
                    self._under_way.add(task)
                    task.add_done_callback(self._under_way.discard)
            if self._failures:
                await asyncio.sleep(min(MAX_BACKOFF, 2.0**self._failures))

    async def _make(self, spec: SandboxSpec, key: str) -> None:
        try:
            handle = await self._runtime.start(spec)
        except RuntimeFailure as error:
            self._failures += 1
            log.warning("starting a spare sandbox failed (attempt %d): %s", self._failures, error)
            return
        except Exception:  # a runtime bug must not stop the refills
            self._failures += 1
            log.exception("starting a spare sandbox failed (attempt %d)", self._failures)
            with contextlib.suppress(Exception):
                await self._runtime.remove(spec.conversation_id)
            return
        finally:
            self._spares.starting.pop(spec.conversation_id, None)
            self._slots.release()
            self._wake.set()
        self._failures = 0
        if self._closing:
            await remove_spare(self._runtime, spec.conversation_id)
        else:
            self._spares.add(key, handle)

    async def close(self) -> None:
        """See the module docstring."""
        self._closing = True
        self._wake.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        # Interrupted between the engine's creates and its starts, a start could leave what
        # the engine was still making (a create it answers after the cancel).
        under_way = list(self._under_way)
        if under_way:
            _, late = await asyncio.wait(under_way, timeout=CLOSE_WAIT)
            for task in late:
                task.cancel()
            await asyncio.gather(*under_way, return_exceptions=True)


async def remove_spare(runtime: Runtime, conversation_id: UUID) -> None:
    """Remove a spare; a failure is logged (the next reconcile retries)."""
    try:
        await runtime.remove(conversation_id)
    except RuntimeFailure as error:
        log.warning("removing spare %s failed (reconcile retries): %s", conversation_id, error)
