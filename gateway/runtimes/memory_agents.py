"""The memory runtime's agents: the sandbox agent's ASGI app served by uvicorn in the
gateway's own event loop, one per sandbox (see :mod:`gateway.runtimes.memory`).

uvicorn is tamed for that (no logging set-up, no signal handlers: both are the
gateway's), and each server gets a socket already bound, so there is no port race.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState
from gateway.runtimes.claiming import CLAIM_FILE
from sandbox_agent.app import create_app
from sandbox_agent.settings import AgentSettings


class AgentConfig(uvicorn.Config):
    """uvicorn's config without its logging set-up (which would reset the gateway's
    ``uvicorn.*`` loggers for every sandbox): the agent logs as the gateway does."""

    def configure_logging(self) -> None:
        return None


class AgentServer(uvicorn.Server):
    """uvicorn without signal handlers: signals are the gateway's, not one sandbox's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class InProcessSandbox:
    """One sandbox of the memory runtime: its agent's server and the task serving it."""

    spec: SandboxSpec
    folder: Path
    base_url: str
    server: AgentServer
    task: asyncio.Task[None] | None = None
    ready: bool = False
    exit_code: int | None = None
    reason: str | None = None
    paused: bool = False

    def handle(self) -> SandboxHandle:
        if self.task is not None and self.task.done():
            return SandboxHandle(
                spec=self.spec,
                base_url=self.base_url,
                state=SandboxState.EXITED,
                exit_code=self.exit_code,
                reason=self.reason or "the agent stopped",
            )
        state = SandboxState.RUNNING if self.ready else SandboxState.STARTING
        state = SandboxState.PAUSED if self.paused else state
        return SandboxHandle(spec=self.spec, base_url=self.base_url, state=state)


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port, handed to uvicorn as is: no port race."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


def agent_server(spec: SandboxSpec, folder: Path, stop_grace: float) -> AgentServer:
    """The agent of ``spec``, its workspace and state under ``folder``, not yet serving; a
    graceful shutdown of it takes up to ``stop_grace`` seconds."""
    agent = AgentSettings(
        workspace=folder / "workspace",
        state_dir=folder / "state",
        token=spec.token,
        unprotected=False,
        conversation_id=spec.conversation_id,
        spare=spec.pool is not None,  # a spare: the token is its claim secret
        claim_file=folder / CLAIM_FILE,
        template=spec.template,
    )
    config = AgentConfig(
        create_app(agent),
        access_log=False,
        http="h11",
        lifespan="on",
        ws_max_size=agent.max_event_bytes,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=math.ceil(stop_grace),
    )
    return AgentServer(config)


async def serve(sandbox: InProcessSandbox, sock: socket.socket) -> None:
    """The agent's whole life; how it ended is its exit code and reason (never raised)."""
    try:
        await sandbox.server.serve(sockets=[sock])
    except SystemExit as exit_:  # uvicorn's answer to a failed lifespan start-up
        sandbox.exit_code = exit_.code if isinstance(exit_.code, int) else 1
        sandbox.reason = "the agent's start-up failed (its traceback is in the gateway's log)"
    except asyncio.CancelledError:
        sandbox.exit_code, sandbox.reason = -9, "the agent was cancelled"
        raise
    except Exception as error:
        sandbox.exit_code, sandbox.reason = 1, f"the agent failed: {error!r}"
    else:
        sandbox.exit_code, sandbox.reason = 0, "the agent stopped"
    finally:
        sock.close()
