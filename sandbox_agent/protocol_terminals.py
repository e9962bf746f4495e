"""The wire's terminals (PTYs): creating one, what it is, and the control frames of its
WebSocket. Part of :mod:`sandbox_agent.protocol`, which re-exports all of it: import from
there."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

# --- terminals (PTYs) --------------------------------------------------------------


class TerminalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cols: int = Field(80, ge=1, le=1000)
    rows: int = Field(24, ge=1, le=1000)
    command: str | list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        min_length=1,
        description="A shell command line (/bin/sh -c), an argv, or null: the user's login shell "
        "(/bin/sh when it has none).",
    )

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: str | list[str] | None) -> str | list[str] | None:
        parts = [value] if isinstance(value, str) else value or []
        if any("\0" in part for part in parts):
            raise ValueError("a command cannot contain a NUL character")
        return value


class TerminalStatus(StrEnum):
    RUNNING = "RUNNING"
    EXITED = "EXITED"


class Terminal(BaseModel):
    id: UUID
    command: list[str] = Field(description="The argv that runs in it.")
    cols: int
    rows: int
    status: TerminalStatus
    created_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    size: int = Field(0, description="Bytes of output so far: the offset of the next byte.")
    kept_from: int = Field(0, description="The oldest offset still kept (older output was dropped).")


class TerminalResize(BaseModel):
    """Text frame from a viewer: resize the PTY (TIOCSWINSZ; its processes get SIGWINCH)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["resize"]
    cols: int = Field(ge=1, le=1000)
    rows: int = Field(ge=1, le=1000)


class TerminalSkipped(BaseModel):
    """Text frame to a viewer: the bytes before ``offset`` are no longer kept; the binary
    frames that follow start at ``offset`` (the viewer asked for ``requested``)."""

    type: Literal["skipped"] = "skipped"
    requested: int
    offset: int


class TerminalExit(BaseModel):
    """Text frame to a viewer, after the last output byte: the terminal's process ended;
    the server then closes with 1000."""

    type: Literal["exit"] = "exit"
    exit_code: int | None
    size: int = Field(description="Total bytes of output: the offset after the last byte.")


class TerminalError(BaseModel):
    """Text frame to a viewer whose text frame could not be used (the socket stays open)."""

    type: Literal["error"] = "error"
    message: str


__all__ = [
    "Terminal",
    "TerminalCreate",
    "TerminalError",
    "TerminalExit",
    "TerminalResize",
    "TerminalSkipped",
    "TerminalStatus",
]
