"""The agent's components and their lifecycle, in one place the routes can reach.

:class:`Agent` owns the event log, the task manager, the terminals and the workspace of one
conversation. :meth:`Agent.start` empties the upload staging dir, reloads the
state directory and, on the very first start only, records
``ConversationStatusUpdate READY`` as event 1.
:meth:`Agent.stop` ends the terminals and cancels running tasks (ending their process
groups), then writes and fsyncs the logs.

A spare (the ``spare`` setting, see :mod:`sandbox_agent.claim`) starts with no
conversation and records nothing: :attr:`Agent.spare` is true, every route but
``/ready`` and ``/claim`` refuses (it answers ready once it has warmed its first command's
paths: :mod:`sandbox_agent.warming`), and :meth:`Agent.claim` makes it the agent of
the claimed conversation, whose READY is then event 1. An agent that finds a
claim kept in its ``claim_file`` at start is that conversation's agent again.
An agent started as a spare keeps its claim secret (:attr:`Agent.pool_secret`), claimed
or not, to answer ``GET /claim`` (:meth:`Agent.claim_state`) for the runtime.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID, uuid4

from sandbox_agent import __version__, warming
from sandbox_agent.activity import Meter
from sandbox_agent.claim import Claim, read_claim, write_claim
from sandbox_agent.errors import Conflict
from sandbox_agent.events import EventLog, StoredEvent
from sandbox_agent.files import Workspace
from sandbox_agent.freezer import Freezer
from sandbox_agent.ports import PortForwarder
from sandbox_agent.protocol import (
    RUNNABLE_TYPES,
    AgentInfo,
    AgentLimits,
    ConversationStatus,
    ConversationStatusUpdate,
)
from sandbox_agent.settings import AgentSettings
from sandbox_agent.tasks import TaskManager
from sandbox_agent.terminals import TerminalManager
from sandbox_agent.uploads import clear_staging

log = logging.getLogger(__name__)


class StateMismatch(RuntimeError):
    """The state directory belongs to another conversation."""


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(settings.workspace)
        self.events = EventLog(
            settings.state_dir,
            tail_bytes=settings.tail_cache_bytes,
            max_lag=settings.subscriber_queue_size,
            max_lag_bytes=settings.subscriber_lag_bytes,
        )
        self.tasks = TaskManager(settings, self.events, self.workspace)
        self.ports = PortForwarder(settings.port_timeout, settings.max_event_bytes)
        self.terminals = TerminalManager(settings, self.events)
        #: Stops and continues every process it started (``POST /freeze``, ``/thaw``).
        self.freezer = Freezer()
        self.tasks.thawed = self.freezer.thawed
        self.ready = False
        #: Set when a stop was asked for (SIGTERM), before the server waits for its connections:
        #: open task streams end then, so the server's graceful wait is not spent on them.
        self.stopping = asyncio.Event()
        self._info_json: bytes | None = None
        #: No conversation yet: the agent waits for a claim (see the module docstring).
        self.spare = False
        #: A claim read before the agent dropped its privileges (its file is root's then).
        self.kept_claim: Claim | None = None
        #: The claim secret of an agent started as a spare (the spare's token): ``POST /claim``
        #: takes it while :attr:`spare`; kept once claimed, ``GET /claim`` answers it alone (the
        #: claim holds the conversation's token). None for an agent started as no spare. Set
        #: by the CLI where it replaced the token already.
        self.pool_secret: str | None = None
        #: The claim this agent serves (None while a spare, and for an agent never one).
        self.current_claim: Claim | None = None
        self._claim_lock = asyncio.Lock()
        #: Requests and connections served (sandbox_agent.activity): asked by every gateway's reaper.
        self.activity = Meter()
        #: The STOPPING event once recorded: a second report (another gateway stopping it too)
        #: records nothing more.
        self.stopping_event: StoredEvent | None = None

    @property
    def conversation_id(self) -> UUID:
        assert self.events.conversation_id is not None
        return self.events.conversation_id

    async def start(self) -> None:
        await asyncio.to_thread(clear_staging, self.settings.upload_staging_dir)
        found = await self.events.open()
        kept = self.kept_claim or await asyncio.to_thread(read_claim, self.settings.claim_file)
        if kept is not None:
            if self.settings.spare and self.pool_secret is None:
                self.pool_secret = self.settings.token  # the token file's: the spare's secret
            self._take(kept)
        elif self.settings.spare:
            if found:
                raise StateMismatch(
                    f"a spare's state dir {self.settings.state_dir} holds events, but no claim"
                )
            self.spare, self.pool_secret, self.settings.token = True, self.settings.token, None
            await self.tasks.open()
            await warming.warm()  # the claimed conversation's first command pays no first use
            self.ready = True
            log.info("spare agent ready, waiting for a claim")
            return
        stored, wanted = self.events.conversation_id, self.settings.conversation_id
        if stored is not None and wanted is not None and stored != wanted:
            raise StateMismatch(
                f"state dir {self.settings.state_dir} holds conversation {stored}, not {wanted}"
            )
        self.events.conversation_id = stored or wanted or uuid4()
        if found == 0:
            self.events.append(
                ConversationStatusUpdate(
                    status=ConversationStatus.READY, conversation_id=self.conversation_id
                )
            )
        await self.tasks.open()
        await self.terminals.open()
        self.ready = True
        log.info("conversation %s ready (%d events reloaded)", self.conversation_id, found)

    async def claim(self, claim: Claim) -> StoredEvent:
        """Become the agent of ``claim``'s conversation: keep the claim (on disk first, so
        a restart cannot make a spare of it again), take its token and task environment,
        record READY as event 1. :class:`Conflict` (409) for an agent that is no spare
        (claimed already) or was made for another conversation id."""
        async with self._claim_lock:
            if not self.spare:
                raise Conflict("this sandbox was claimed already")
            wanted = self.settings.conversation_id
            if wanted is not None and wanted != claim.conversation_id:
                raise Conflict(
                    f"this spare was made for another conversation id than {claim.conversation_id}"
                )
            if self.settings.claim_file is not None:
                try:
                    await asyncio.to_thread(write_claim, self.settings.claim_file, claim)
                except FileExistsError:
                    raise Conflict("this sandbox was claimed already") from None
            self._take(claim)
            self.spare = False
            stored = self.events.append(
                ConversationStatusUpdate(
                    status=ConversationStatus.READY, conversation_id=claim.conversation_id
                )
            )
            log.info("claimed for conversation %s", claim.conversation_id)
            return stored

    async def claim_state(self) -> Claim | None:
        """The claim this agent serves, ``None`` while it is a spare. A claim under way is
        waited for: once a claim has begun, no answer says "spare" any more."""
        async with self._claim_lock:
            return self.current_claim

    def _take(self, claim: Claim) -> None:
        stored = self.events.conversation_id
        if stored is not None and stored != claim.conversation_id:
            raise StateMismatch(f"the claim is for {claim.conversation_id}, the state dir for {stored}")
        self.events.conversation_id = claim.conversation_id
        self.settings.token, self.settings.unprotected = claim.token, False
        self.settings.task_env = claim.task_env()
        self.settings.conversation_id = claim.conversation_id
        self.current_claim = claim
        self._info_json = None

    async def stop(self) -> None:
        self.ready = False
        await self.terminals.close()
        await self.tasks.close()
        await self.ports.close()
        await self.events.close()

    def info_json(self) -> bytes:
        """:meth:`info` encoded, built on first use: it holds nothing that changes while
        the agent runs, and the runnables' JSON schemas cost milliseconds to build."""
        if self._info_json is None:
            self._info_json = self.info().model_dump_json().encode()
        return self._info_json

    def info(self) -> AgentInfo:
        settings = self.settings
        return AgentInfo(
            version=__version__,
            conversation_id=self.conversation_id,
            workspace=str(self.workspace.root),
            runnables={
                str(model.model_fields["type"].default): model.model_json_schema() for model in RUNNABLE_TYPES
            },
            limits=AgentLimits(
                max_task_output_bytes=settings.max_task_output_bytes,
                max_upload_bytes=settings.max_upload_bytes,
                max_event_bytes=settings.max_event_bytes,
                subscriber_queue_size=settings.subscriber_queue_size,
                kill_grace_seconds=settings.kill_grace_seconds,
                terminal_keep_bytes=settings.terminal_keep_bytes,
                max_terminals=settings.max_terminals,
            ),
            template=settings.template,
        )
