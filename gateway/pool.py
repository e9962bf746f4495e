"""The pool: ready spare sandboxes, claimed by a create in one call. Above the Runtime seam.

A *spare* is a sandbox started ahead of time whose agent has no conversation
yet (``SandboxSpec.pool`` set; see :mod:`gateway.runtimes.base` and
:mod:`sandbox_agent.claim`). ``POST /conversation`` whose options a spare can
take (:meth:`Pool.key_for`: default limits, no internet, no egress, a
template with a pool) takes one (:meth:`Pool.take`) and claims it
(:meth:`Pool.claim`): the agent then records the conversation's READY as its
event 1, so the conversation answers 201 already READY. The spare's
conversation id is chosen when it is made: it is shown to nobody before the
claim (spares are not listed, counted, reaped or on the firehose), and the
sandbox's names and labels never have to change.

Contracts:
- A pool per template: ``pool_size`` spares of the default template (unset: 2
  on Docker, 0 elsewhere) and ``pool_sizes`` ("node=2,ci=1") of others, never
  more than ``pool_max_spares`` in all. A spare runs its pool's template. They
  count against no conversation limit, so the pool never pushes a user into 429.
- Refills run in the background, at most ``pool_refill_concurrency`` at once,
  and a refill waits to begin while a user waits on a cold start
  (:meth:`Pool.cold_start`) or a claim, and until half a second after a claim
  (the new conversation's first commands go first). Failed refills back off (up to a minute).
- A spare is handed out once: taken, it leaves the pool for good; if its claim
  fails it is removed (:class:`~gateway.errors.SpareTaken`: claimed by
  another gateway, it is left to that one). A claimed sandbox belongs to its
  conversation and is removed with it.
- Restarts (:meth:`Pool.reconcile`, from the conversations' reconcile): RUNNING
  spares that answer ``/ready`` are adopted, EXITED ones and spares STARTING for
  longer than a start may take (half-made by a gateway killed meanwhile) are
  removed. :meth:`Pool.close` (the gateway's shutdown) removes every spare.
- A spare whose template has no pool any more (the settings changed) is removed at reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from uuid import UUID, uuid4

import httpx

from gateway.errors import RuntimeFailure, SpareTaken
from gateway.models import ConversationCreate, PoolStatus
from gateway.runtimes.base import Runtime, SandboxHandle, SandboxSpec, SandboxState
from gateway.settings import Settings

log = logging.getLogger("convoy.gateway")

#: ``pool_size`` when unset, by runtime: a spare costs a container on Docker, where a cold
#: start is slow; elsewhere a cold start is cheap and tests want none by default.
DEFAULT_SIZES = {"docker": 2}
#: Seconds past the start timeout after which a STARTING spare is taken for half-made.
_HALF_MADE_MARGIN = 30.0
_MAX_BACKOFF = 60.0
#: Seconds a refill waits after a claim: a container start slows down everything on a small
#: machine, and the first commands of the conversation just claimed are the ones users wait on.
_SETTLE = 0.5
#: Seconds between two looks at the pool when nothing wakes the refill.
_IDLE_LOOK = 5.0
#: Seconds a shutdown gives a spare's start under way to end (a container start takes a few).
_CLOSE_WAIT = 10.0


def pool_size(settings: Settings, runtime_name: str) -> int:
    """Spares of the default template: ``pool_size``, or the runtime's default when unset."""
    return settings.pool_size if settings.pool_size is not None else DEFAULT_SIZES.get(runtime_name, 0)


def pool_sizes(settings: Settings, runtime_name: str) -> dict[str, int]:
    """Spares kept per template: the default template's and ``pool_sizes``'s (which wins)."""
    return {settings.default_template: pool_size(settings, runtime_name)} | settings.pool_sizes_by_template()


class Pool:
    def __init__(self, settings: Settings, runtime: Runtime, http: httpx.AsyncClient) -> None:
        #: Spares kept per template (the pool's key); ``size``: the default template's.
        self.sizes = pool_sizes(settings, runtime.name)
        self.size = self.sizes[settings.default_template]
        self._default_template = settings.default_template
        self._max_spares = settings.pool_max_spares
        self._runtime = runtime
        self._http = http
        self._half_made_after = settings.start_timeout + _HALF_MADE_MARGIN
        self._ready: dict[str, deque[SandboxHandle]] = {key: deque() for key, n in self.sizes.items() if n}
        self._starting: dict[UUID, str] = {}  # spares this gateway is starting, by id: their key
        self._handed_out: set[UUID] = set()  # never adopted again, whatever a listing says
        self.claimed_total = 0
        self.cold_total = 0
        #: Called for each create that wanted a spare and found none (the app counts it as a
        #: pool miss in its metrics); a hit is counted where the claim is (the counted runtime).
        self.on_miss: Callable[[], None] | None = None
        self._users_waiting = 0  # cold starts and claims under way
        self._claimed_at = 0.0
        self._nobody_waiting = asyncio.Event()
        self._nobody_waiting.set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.pool_refill_concurrency)
        self._refills: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._failures = 0
        self._closing = False

    # --- what a create asks -----------------------------------------------------------

    def key_for(self, body: ConversationCreate) -> str | None:
        """The pool whose spares can take ``body``, or ``None`` (it starts cold): a spare has
        the default limits and its own internal network, so other limits, internet or an
        egress list cannot be given to it after the fact; its template is its pool's."""
        template = body.template or self._default_template
        if not self.sizes.get(template) or body.internet or body.egress is not None:
            return None
        if any(value is not None for value in body.limits.model_dump().values()):
            return None
        return template

    def take(self, key: str | None) -> SandboxHandle | None:
        """A ready spare of pool ``key``, out of the pool for good; ``None`` when there is none.
        Synchronous: a create registers its conversation in the same step."""
        if key is None:
            return None  # no spare can take it: it did not ask the pool
        spares = self._ready.get(key)
        if not spares:
            if self.on_miss is not None:
                self.on_miss()
            return None
        spare = spares.popleft()
        self._handed_out.add(spare.conversation_id)
        return spare  # the refill is woken once the claim is done: it would slow the claim down

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle | None:
        """Claims ``spare`` for ``spec``: the conversation's RUNNING handle, or ``None`` when it
        could not be claimed (then it is removed and the caller starts cold, with the same id).
        Raises :class:`SpareTaken` when another gateway claimed it first (left to that one)."""
        async with self._user_waiting():
            try:
                handle = await self._runtime.claim(spare, spec)
            except SpareTaken:
                raise
            except RuntimeFailure as error:
                log.warning("claiming spare %s failed (starting cold): %s", spare.conversation_id, error)
                with contextlib.suppress(RuntimeFailure):
                    await self._runtime.remove(spare.conversation_id)
                return None
        self.claimed_total += 1
        self._claimed_at = time.monotonic()
        return handle

    @contextlib.asynccontextmanager
    async def cold_start(self) -> AsyncIterator[None]:
        """Around a cold start a user waits on: counted, and refills wait to begin meanwhile."""
        self.cold_total += 1
        async with self._user_waiting():
            yield

    @contextlib.asynccontextmanager
    async def _user_waiting(self) -> AsyncIterator[None]:
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

    def status(self) -> PoolStatus:
        return PoolStatus(
            size=self.size,
            sizes=self.sizes,
            ready=sum(len(spares) for spares in self._ready.values()),
            starting=len(self._starting),
            claimed_total=self.claimed_total,
            cold_total=self.cold_total,
        )

    # --- refills ----------------------------------------------------------------------

    def start(self) -> None:
        """Begin keeping the pool full (after the first reconcile adopted what exists)."""
        if any(self.sizes.values()) and self._supervisor is None and not self._closing:
            self._supervisor = asyncio.create_task(self._supervise(), name="pool refills")

    def _spares(self) -> int:
        return sum(len(spares) for spares in self._ready.values()) + len(self._starting)

    def _missing(self, key: str) -> int:
        have = len(self._ready[key]) + sum(1 for wanted in self._starting.values() if wanted == key)
        return min(self.sizes.get(key, 0) - have, self._max_spares - self._spares())

    async def _supervise(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _IDLE_LOOK)
            self._wake.clear()
            for key in list(self._ready):
                while not self._closing and self._missing(key) > 0:
                    await self._nobody_waiting.wait()  # a user waiting on a start or claim goes first
                    settle = self._claimed_at + _SETTLE - time.monotonic()
                    if settle > 0:  # and so do the first commands of a conversation just claimed
                        await asyncio.sleep(settle)
                    await self._slots.acquire()
                    if self._closing or self._missing(key) <= 0:
                        self._slots.release()
                        break
                    spec = self._spare_spec(key)
                    self._starting[spec.conversation_id] = key
                    task = asyncio.create_task(self._make(spec, key), name=f"spare {spec.conversation_id}")
                    self._refills.add(task)
                    task.add_done_callback(self._refills.discard)
            if self._failures:
                await asyncio.sleep(min(_MAX_BACKOFF, 2.0**self._failures))

    @staticmethod
    def _spare_spec(key: str) -> SandboxSpec:
        """A spare of pool ``key``: it runs the template ``key``."""
        return SandboxSpec(
            conversation_id=uuid4(),
            owner="",
            title="",
            token=secrets.token_urlsafe(32),  # the spare's claim secret
            created_at=datetime.now(UTC),
            pool=key,
            template=key,
        )

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
            self._starting.pop(spec.conversation_id, None)
            self._slots.release()
            self._wake.set()
        self._failures = 0
        if self._closing:
            await self._remove(spec.conversation_id)
        else:
            self._ready[key].append(handle)

    async def _remove(self, conversation_id: UUID) -> None:
        try:
            await self._runtime.remove(conversation_id)
        except RuntimeFailure as error:
            log.warning("removing spare %s failed (reconcile retries): %s", conversation_id, error)

    # --- restarts and shutdown --------------------------------------------------------

    async def reconcile(self, spares: list[SandboxHandle]) -> None:
        """Brings the pool in line with the spares the runtime lists (see the module docstring)."""
        listed = {handle.conversation_id for handle in spares}
        for ready in list(self._ready.values()):
            for handle in [handle for handle in ready if handle.conversation_id not in listed]:
                # Not listed: vanished, or ready only since the listing was taken (then it is there).
                with contextlib.suppress(RuntimeFailure):
                    found = await self._runtime.find(handle.conversation_id)
                    if found is None or found.spec.pool is None:  # gone, or claimed elsewhere
                        self._drop(handle.conversation_id)
        ready_ids = {handle.conversation_id for spares_ in self._ready.values() for handle in spares_}
        for handle in spares:
            spare_id, key = handle.conversation_id, handle.spec.pool or self._default_template
            if spare_id in self._handed_out or spare_id in self._starting:
                continue
            if handle.state is SandboxState.EXITED or key not in self._ready:  # ended, or no pool now
                self._drop(spare_id)
                await self._remove(spare_id)
            elif spare_id in ready_ids or self._closing:
                continue
            elif handle.state is SandboxState.RUNNING and await self._still_spare(handle):
                self._ready[key].append(handle)
                log.info("adopted spare sandbox %s (pool %s)", spare_id, key)
            elif time.time() - handle.spec.created_at.timestamp() > self._half_made_after:
                log.info("removing half-made spare sandbox %s", spare_id)
                await self._remove(spare_id)
        self._wake.set()

    def discard(self, conversation_id: UUID) -> None:
        """A listing shows ``conversation_id`` as a conversation: if it was a ready spare here,
        another gateway of the installation claimed it, and it is no spare any more."""
        ready_ids = {handle.conversation_id for ready in self._ready.values() for handle in ready}
        if conversation_id in ready_ids:
            self._handed_out.add(conversation_id)
            self._drop(conversation_id)

    def _drop(self, spare_id: UUID) -> None:
        for key, ready in self._ready.items():
            self._ready[key] = deque(handle for handle in ready if handle.conversation_id != spare_id)

    async def _still_spare(self, handle: SandboxHandle) -> bool:
        """Whether its agent answers as a spare (ready, not claimed: by another gateway, say)."""
        try:
            response = await self._http.get(f"{handle.base_url}/ready", timeout=2.0)
            return response.status_code == 200 and response.json().get("spare") is True
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    async def close(self) -> None:
        """The gateway's shutdown: no refill begins; one under way runs to its end (for up to
        :data:`_CLOSE_WAIT` seconds, then it is cancelled: its half-started spare is removed by
        the runtime) and its spare is removed; every ready spare is removed. Conversations are
        not touched."""
        self._closing = True
        self._wake.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        # Interrupted between the engine's creates and its starts, a start could leave what
        # the engine was still making (a create it answers after the cancel).
        refills = list(self._refills)
        if refills:
            _, late = await asyncio.wait(refills, timeout=_CLOSE_WAIT)
            for task in late:
                task.cancel()
            await asyncio.gather(*refills, return_exceptions=True)
        ready = [handle for spares in self._ready.values() for handle in spares]
        for spares in self._ready.values():
            spares.clear()

        async def remove_if_spare(handle: SandboxHandle) -> None:
            # Another gateway of the installation may have claimed it meanwhile: then it is a
            # conversation's, and stays.
            found = await self._runtime.find(handle.conversation_id)
            if found is None or found.spec.pool is None:
                return
            if found.state is SandboxState.EXITED or await self._still_spare(found):
                await self._remove(handle.conversation_id)

        await asyncio.gather(*(remove_if_spare(handle) for handle in ready), return_exceptions=True)
