"""The agent's components and their lifecycle, in one place the routes can reach.

:class:`Agent` owns the event log, the task manager and the workspace of one
conversation. :meth:`Agent.start` empties the upload staging dir, reloads the
state directory and, on the very first start only, records
``ConversationStatusUpdate READY`` as event 1.
:meth:`Agent.stop` cancels running tasks (ending their process groups), then
writes and fsyncs the logs.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID, uuid4

from sandbox_agent import __version__
from sandbox_agent.events import EventLog
from sandbox_agent.files import Workspace
from sandbox_agent.protocol import (
    RUNNABLE_TYPES,
    AgentInfo,
    AgentLimits,
    ConversationStatus,
    ConversationStatusUpdate,
)
from sandbox_agent.settings import AgentSettings
from sandbox_agent.tasks import TaskManager
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
        self.ready = False
        self._info_json: bytes | None = None

    @property
    def conversation_id(self) -> UUID:
        assert self.events.conversation_id is not None
        return self.events.conversation_id

    async def start(self) -> None:
        await asyncio.to_thread(clear_staging, self.settings.upload_staging_dir)
        found = await self.events.open()
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
        self.ready = True
        log.info("conversation %s ready (%d events reloaded)", self.conversation_id, found)

    async def stop(self) -> None:
        self.ready = False
        await self.tasks.close()
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
            ),
            template=settings.template,
        )
