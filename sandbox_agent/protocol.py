"""What crosses the wire: the one definition shared by the agent, the gateway and the client.

The agent serves the per-conversation routes without the ``/conversation/{id}``
prefix; the gateway serves them with it and re-exposes these models so its
OpenAPI and AsyncAPI documents are complete.

Every event is an :class:`Event` envelope. ``seq`` is per conversation, starts
at 1, is gapless and monotonic, and is what a client resumes from
(``after_seq``). Status frames that the gateway sends before a sandbox exists
(STARTING phases, a start-up ERROR) carry ``seq`` 0: they are not part of any
event log and cannot be replayed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

# The names both sides agree on are written once, in sandbox_agent.contract; they are part of
# the protocol, so everything it exports is re-exported here.
from sandbox_agent.contract import *  # noqa: F403
from sandbox_agent.contract import MAX_PAGE_LIMIT

# The models are written by noun in modules of their own; this module is where they are
# imported from, so it re-exports all of them.
from sandbox_agent.protocol_events import *  # noqa: F403
from sandbox_agent.protocol_tasks import *  # noqa: F403
from sandbox_agent.protocol_terminals import *  # noqa: F403

# --- paging -----------------------------------------------------------------------

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list. ``next_page_id`` is an opaque cursor, ``None`` on the last page."""

    results: list[T]
    next_page_id: str | None = None


class Count(BaseModel):
    count: int


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer of the agent and the gateway has this body."""

    detail: Any = Field(description="What was wrong: a sentence, or a list of field errors.")


# --- files ------------------------------------------------------------------------


class FileInfo(BaseModel):
    name: str
    path: str = Field(description="Relative to the workspace root, '/'-separated.")
    size: int
    is_dir: bool
    modified: datetime


# --- agent info -------------------------------------------------------------------


class AgentLimits(BaseModel):
    max_page_limit: int = MAX_PAGE_LIMIT
    max_task_output_bytes: int
    max_upload_bytes: int
    max_event_bytes: int
    subscriber_queue_size: int
    kill_grace_seconds: float
    terminal_keep_bytes: int = Field(description="Output kept per terminal for replay (at least).")
    max_terminals: int = Field(description="Terminals that may run at once.")


class Activity(BaseModel):
    """``GET /activity`` (gateway only): how long the agent has served nobody, for idle reaping
    by any gateway of the installation. Requests carrying :data:`PASSIVE_HEADER`, and the
    agent's own probes (``/ready``, ``/health``, ``/activity``, ...), do not count."""

    idle_seconds: float = Field(ge=0, description="Seconds since the last request or connection ended.")
    connections: int = Field(ge=0, description="Requests and WebSockets open right now.")


class AgentInfo(BaseModel):
    version: str
    conversation_id: UUID
    workspace: str
    runnables: dict[str, dict[str, Any]] = Field(description="JSON schema of each runnable type.")
    limits: AgentLimits
    template: str | None = Field(None, description="The template the sandbox runs, where it was told.")
