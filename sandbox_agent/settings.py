"""Agent settings: every knob, from the environment with the prefix ``CONVOY_AGENT_``.

The conversation id is the one exception to the prefix: it comes from
``CONVOY_CONVERSATION_ID`` (shared with the gateway's vocabulary) and is a fresh
UUID when unset. The token is ``CONVOY_AGENT_TOKEN``; without one the agent
refuses to start unless ``unprotected`` is set explicitly.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVOY_AGENT_", extra="ignore")

    workspace: Path = Field(Path("workspace"), description="Root of the conversation's files.")
    state_dir: Path = Field(Path("state"), description="Event log and task records; not in the workspace.")
    token: str | None = Field(
        None, description="Required in X-Convoy-Token on every route but /health, /ready."
    )
    unprotected: bool = Field(False, description="Serve without a token (local development only).")
    conversation_id: UUID | None = Field(
        None,
        validation_alias=AliasChoices("CONVOY_CONVERSATION_ID", "conversation_id"),
        description="Unset: the id recorded in the state dir's event log, or a fresh UUID on first start.",
    )

    # --- limits -------------------------------------------------------------------
    max_task_output_bytes: int = Field(
        1 * MiB, ge=0, description="Output a task may stream as events; the rest goes to a workspace file."
    )
    max_upload_bytes: int = Field(4 * 1024 * MiB, ge=0, description="Largest multipart body accepted.")
    max_event_bytes: int = Field(1 * MiB, ge=1024, description="Largest JSON body or WebSocket frame.")
    subscriber_queue_size: int = Field(
        10_000, ge=1, description="Events a live WebSocket subscriber may lag behind before it is closed."
    )
    kill_grace_seconds: float = Field(3.0, ge=0, description="SIGTERM to SIGKILL for a task's processes.")
    output_chunk_bytes: int = Field(64 * 1024, ge=1, description="Largest read from a task's pipe.")
    tail_cache_bytes: int = Field(8 * MiB, ge=0, description="Recent events kept in memory for followers.")
    memory_events_file: Path | None = Field(
        None,
        description="Cgroup file with the oom_kill counter (memory.events, v2; memory.oom_control, v1) that "
        "tells an out-of-memory kill from another SIGKILL. Unset: this process's memory cgroup.",
    )

    def token_required(self) -> bool:
        return not self.unprotected

    @property
    def output_dir_name(self) -> str:
        """Workspace-relative directory that receives output past a task's budget."""
        return ".convoy/output"

    @property
    def upload_staging_dir(self) -> Path:
        """Where uploads are received before they are moved into the workspace: in the state
        dir, so never visible to (or reachable by) a client; emptied when the agent starts."""
        return self.state_dir / "uploads"
