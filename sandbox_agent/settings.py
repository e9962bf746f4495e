"""Agent settings: every knob, from the environment with the prefix ``CONVOY_AGENT_``.

The conversation id is the one exception to the prefix: it comes from
``CONVOY_CONVERSATION_ID`` (shared with the gateway's vocabulary) and is a fresh
UUID when unset. The token comes from the file ``token_file``
(``CONVOY_AGENT_TOKEN_FILE``: what the runtimes use, so the token is in no
process's environment) or ``CONVOY_AGENT_TOKEN``; without one the agent refuses
to start unless ``unprotected`` is set explicitly.

Keyword arguments win over the environment; variable names are matched without
regard to case. A plain pydantic model reads the environment itself:
pydantic-settings would cost the agent more than a megabyte of resident memory
(its many sources and their imports) for what a dozen lines do here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from sandbox_agent.protocol import AGENT_ENV_PREFIX, CONVERSATION_ID_ENV

MiB = 1024 * 1024


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_default=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**(environment() | values))

    workspace: Path = Field(Path("workspace"), description="Root of the conversation's files.")
    state_dir: Path = Field(Path("state"), description="Event log and task records; not in the workspace.")
    token: str | None = Field(
        None, description="Required in X-Convoy-Token on every route but /health, /ready."
    )
    token_file: Path | None = Field(
        None, description="File holding the token (wins over ``token``); read once, at start-up."
    )
    run_as: str | None = Field(
        None,
        description="UID:GID the agent works as and runs tasks as, when started as root (see "
        "sandbox_agent.privileges); the token file is read before the switch.",
    )
    unprotected: bool = Field(False, description="Serve without a token (local development only).")
    template: str | None = Field(None, description="The template this sandbox runs (what agent-info says).")
    task_python: str | None = Field(
        None,
        description="The interpreter of Python tasks (looked up on the tasks' PATH when not a path); unset: "
        "the agent's own. A sandbox whose agent is mounted into its image runs the image's python3.",
    )
    conversation_id: UUID | None = Field(
        None,
        description="Unset: the id recorded in the state dir's event log, or a fresh UUID on first start.",
    )

    # --- spares (see sandbox_agent.claim) ------------------------------------------
    spare: bool = Field(
        False,
        description="Start with no conversation, answering only /ready and /claim; the token (file) is "
        "then the claim secret, and the claim brings the conversation's token.",
    )
    claim_file: Path | None = Field(
        None, description="Where the claim is kept (and reloaded from at every start). Unset: no claim."
    )
    task_env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment of every task (a claim's env); never read from os.environ.",
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
    subscriber_lag_bytes: int = Field(
        64 * MiB, ge=64 * 1024, description="Bytes of events a live WebSocket subscriber may lag behind."
    )
    kill_grace_seconds: float = Field(3.0, ge=0, description="SIGTERM to SIGKILL for a task's processes.")
    output_chunk_bytes: int = Field(64 * 1024, ge=1, description="Largest read from a task's pipe.")
    tail_cache_bytes: int = Field(8 * MiB, ge=0, description="Recent events kept in memory for followers.")
    port_timeout: float = Field(
        60.0, gt=0, description="Seconds a server on a preview port may take to accept and to answer."
    )
    memory_events_file: Path | None = Field(
        None,
        description="Cgroup file with the oom_kill counter (memory.events, v2; memory.oom_control, v1) that "
        "tells an out-of-memory kill from another SIGKILL. Unset: this process's memory cgroup.",
    )

    # --- terminals (sandbox_agent.terminals) ---------------------------------------
    terminal_keep_bytes: int = Field(
        4 * MiB,
        ge=4096,
        description="Output kept per terminal for replay: at least the last this many bytes (at most "
        "twice that on disk); a viewer asking for an older offset is told and gets the oldest kept.",
    )
    max_terminals: int = Field(
        16, ge=1, description="Terminals running at once; as many exited ones are kept."
    )

    @property
    def terminals_dir(self) -> Path:
        """Each terminal's output file; emptied when the agent starts (terminals do not survive it)."""
        return self.state_dir / "terminals"

    @property
    def output_dir_name(self) -> str:
        """Workspace-relative directory that receives output past a task's budget."""
        return ".convoy/output"

    @property
    def upload_staging_dir(self) -> Path:
        """Where uploads are received before they are moved into the workspace: in the state
        dir, so never visible to (or reachable by) a client; emptied when the agent starts."""
        return self.state_dir / "uploads"


def environment() -> dict[str, str]:
    """The settings found in ``os.environ``, by field name: ``CONVOY_AGENT_<FIELD>``, and
    the conversation id from ``CONVOY_CONVERSATION_ID`` (never a prefixed name)."""
    found: dict[str, str] = {}
    for key, value in os.environ.items():
        name = key.upper()
        if name == CONVERSATION_ID_ENV:
            found["conversation_id"] = value
        elif name.startswith(AGENT_ENV_PREFIX):
            field = name.removeprefix(AGENT_ENV_PREFIX).lower()
            if field in AgentSettings.model_fields and field not in ("conversation_id", "task_env"):
                found[field] = value
    return found
