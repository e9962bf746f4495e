"""A spare agent's claim: the conversation it is handed, and where it keeps it.

A spare (the ``spare`` setting) starts with a claim secret instead of a token
and no conversation. ``POST /claim`` (:mod:`sandbox_agent.routes.claim`) hands
it a :class:`Claim` in one call; the agent writes it to its ``claim_file``
before it answers (as root where it was started as root, mode 0400, so no task
can read the token in it: see :mod:`sandbox_agent.privileges`), then serves
that conversation. At every later start the agent reloads the file and is that
conversation's agent again, never a spare: a claimed agent takes no second claim.

The runtime that made the spare learns what the sandbox became (owner, title,
token, ...) from ``GET /claim`` (:class:`ClaimState`, authenticated with the same
claim secret, which the agent keeps after the claim for this question alone), and
reads the same file back where the agent does not answer (stopped, paused, booting).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from sandbox_agent.contract import RESERVED_ENV_PREFIX


class Claim(BaseModel):
    """Body of ``POST /claim``: who the spare now serves. ``owner``, ``title``,
    ``created_at`` and ``idle_timeout`` mean nothing to the agent: it keeps them
    for whoever reads the claim back (the runtime, after a restart)."""

    model_config = ConfigDict(extra="forbid")
    conversation_id: UUID
    token: str = Field(..., min_length=16, max_length=512, description="The conversation's agent token.")
    owner: str = Field("", max_length=200)
    title: str = Field("", max_length=200)
    created_at: datetime
    idle_timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every task.")
    on_idle: Literal["delete", "pause"] = Field("delete", description="Kept for the runtime, like owner.")

    def task_env(self) -> dict[str, str]:
        """``env`` without the names reserved to convoy (which no task may be given)."""
        return {
            key: value for key, value in self.env.items() if not key.upper().startswith(RESERVED_ENV_PREFIX)
        }


class ClaimState(BaseModel):
    """Answer of ``GET /claim``: what the agent is now."""

    model_config = ConfigDict(extra="forbid")
    claim: Claim | None = Field(
        ..., description="The claim the agent serves; null while it is a spare, waiting for one."
    )


def read_claim(path: Path | None) -> Claim | None:
    """The claim kept in ``path``; ``None`` when there is none (or it cannot be read)."""
    if path is None:
        return None
    try:
        return Claim.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_claim(path: Path, claim: Claim) -> None:
    """Keep ``claim`` in ``path`` (created, never replaced: ``FileExistsError`` when there is
    one already), readable by its owner only, synced to disk. Blocking: run in a thread."""
    with _as_starting_user():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        try:
            os.write(fd, claim.model_dump_json().encode())
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _as_starting_user() -> Iterator[None]:
    """Where the agent was started as root and now works as the sandbox user (real uid 0,
    effective not), act as root for the block, so the file is root's: no task can read it.
    A spare runs no task, so nothing else happens meanwhile that could use it."""
    real, effective, _ = os.getresuid()
    if real != 0 or effective == 0:
        yield
        return
    os.setresuid(-1, 0, -1)
    try:
        yield
    finally:
        os.setresuid(-1, effective, -1)
