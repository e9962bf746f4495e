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
  See :mod:`gateway.pool_refill`.
- A spare is handed out once: taken, it leaves the pool for good; if its claim
  fails it is removed (:class:`~gateway.errors.SpareTaken`: claimed by
  another gateway, it is left to that one). A claimed sandbox belongs to its
  conversation and is removed with it.
- Restarts (:meth:`Pool.reconcile`, from the conversations' reconcile): RUNNING
  spares that answer ``/ready`` are adopted, EXITED ones and spares STARTING for
  longer than a start may take (half-made by a gateway killed meanwhile) are
  removed. :meth:`Pool.close` (the gateway's shutdown) removes every spare.
- A spare whose template has no pool any more (the settings changed) is removed at reconcile
  (:mod:`gateway.pool_adoption`).

Modules: this one answers creates; :mod:`gateway.pool_spares` holds the spares,
:mod:`gateway.pool_refill` keeps the pools full, :mod:`gateway.pool_adoption` adopts and removes
what the runtime lists.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from uuid import UUID

import httpx

from gateway.errors import RuntimeFailure, SpareTaken
from gateway.models import ConversationCreate, PoolStatus
from gateway.pool_adoption import Adoption
from gateway.pool_refill import Refills
from gateway.pool_spares import Spares
from gateway.runtimes.base import Runtime, SandboxHandle, SandboxSpec
from gateway.settings import Settings

log = logging.getLogger("convoy.gateway")

#: ``pool_size`` when unset, by runtime: a spare costs a container on Docker, where a cold
#: start is slow; elsewhere a cold start is cheap and tests want none by default.
DEFAULT_SIZES = {"docker": 2}
#: Seconds past the start timeout after which a STARTING spare is taken for half-made.
_HALF_MADE_MARGIN = 30.0


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
        self._runtime = runtime
        self._spares = Spares(self.sizes, settings.pool_max_spares)
        self._refills = Refills(self._spares, runtime, settings.pool_refill_concurrency)
        self._adoption = Adoption(
            self._spares, runtime, http, settings.default_template, settings.start_timeout + _HALF_MADE_MARGIN
        )
        self.claimed_total = 0
        self.cold_total = 0
        #: Called for each create that wanted a spare and found none (the app counts it as a
        #: pool miss in its metrics); a hit is counted where the claim is (the counted runtime).
        self.on_miss: Callable[[], None] | None = None
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
        spare = self._spares.take(key)
        if spare is None and self.on_miss is not None:
            self.on_miss()
        return spare  # the refill is woken once the claim is done: it would slow the claim down

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle | None:
        """Claims ``spare`` for ``spec``: the conversation's RUNNING handle, or ``None`` when it
        could not be claimed (then it is removed and the caller starts cold, with the same id).
        Raises :class:`SpareTaken` when another gateway claimed it first (left to that one)."""
        async with self._refills.user_waiting():
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
        self._refills.claimed()
        return handle

    @contextlib.asynccontextmanager
    async def cold_start(self) -> AsyncIterator[None]:
        """Around a cold start a user waits on: counted, and refills wait to begin meanwhile."""
        self.cold_total += 1
        async with self._refills.user_waiting():
            yield

    def status(self) -> PoolStatus:
        return PoolStatus(
            size=self.size,
            sizes=self.sizes,
            ready=self._spares.ready_count(),
            starting=len(self._spares.starting),
            claimed_total=self.claimed_total,
            cold_total=self.cold_total,
        )

    def ready_ids(self) -> set[UUID]:
        """The ids of the spares ready here (none of them a conversation's)."""
        return self._spares.ready_ids()

    # --- refills, restarts and shutdown -----------------------------------------------

    def start(self) -> None:
        """Begin keeping the pool full (after the first reconcile adopted what exists)."""
        if any(self.sizes.values()) and not self._closing:
            self._refills.start()

    async def reconcile(self, spares: list[SandboxHandle]) -> None:
        """Brings the pool in line with the spares the runtime lists (see the module docstring)."""
        await self._adoption.reconcile(spares, self._closing)
        self._refills.wake()

    def discard(self, conversation_id: UUID) -> None:
        """A listing shows ``conversation_id`` as a conversation: if it was a ready spare here,
        another gateway of the installation claimed it, and it is no spare any more."""
        if conversation_id in self._spares.ready_ids():
            self._spares.hand_out(conversation_id)

    async def close(self) -> None:
        """The gateway's shutdown: no refill begins; one under way runs to its end (for up to
        :data:`~gateway.pool_refill.CLOSE_WAIT` seconds, then it is cancelled: its half-started
        spare is removed by the runtime) and its spare is removed; every ready spare is removed.
        Conversations are not touched."""
        self._closing = True
        await self._refills.close()
        await self._adoption.remove_spares(self._spares.clear())
