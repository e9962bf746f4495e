"""MemoryRuntime: the sandbox agent inside the gateway's own process, for fast tests.

Each sandbox is the agent's ASGI app (:func:`sandbox_agent.app.create_app`)
served by uvicorn on a 127.0.0.1 port in the gateway's event loop: no
subprocess, no container, no isolation at all. It has a workspace and a state
dir of its own under ``<state_dir>/memory/<install>/<conversation_id>/``, and
speaks the same wire as every other sandbox, so everything above the seam
(proxy, WebSockets, firehose, pools, reaping) runs unchanged on it.

The registry is this instance's memory: a restarted gateway in the same
process finds its sandboxes when it is handed the same runtime instance (an
app does not close a runtime it was handed); a new instance knows none (and
:meth:`cleanup_orphans` removes the folders a previous one left). Unlike the
other runtimes', :meth:`MemoryRuntime.close` stops the agents: they cannot
outlive the process anyway.

What it does not do, by design: the spec's ``env`` and ``limits`` are not
applied (tasks run with the gateway's own environment, as children of the
gateway's process), and nothing survives the process. Tests of those, of
process groups or of agents that die use the process or the Docker runtime.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import uvicorn

from gateway.errors import RuntimeFailure, SandboxStartError
from gateway.runtimes.base import (
    ProgressCallback,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    Template,
    TemplateSource,
    wait_until_ready,
)
from gateway.runtimes.template_catalog import MemoryTemplates
from gateway.settings import Settings
from sandbox_agent.app import create_app
from sandbox_agent.settings import AgentSettings

#: Seconds past the graceful-shutdown timeout an agent gets to stop its tasks before it is cancelled.
_STOP_MARGIN = 10.0


class _AgentConfig(uvicorn.Config):
    """uvicorn's config without its logging set-up (which would reset the gateway's
    ``uvicorn.*`` loggers for every sandbox): the agent logs as the gateway does."""

    def configure_logging(self) -> None:
        return None


class _AgentServer(uvicorn.Server):
    """uvicorn without signal handlers: signals are the gateway's, not one sandbox's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class _Sandbox:
    spec: SandboxSpec
    folder: Path
    base_url: str
    server: _AgentServer
    task: asyncio.Task[None] | None = None
    ready: bool = False
    exit_code: int | None = None
    reason: str | None = None

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
        return SandboxHandle(spec=self.spec, base_url=self.base_url, state=state)


def _listening_socket() -> socket.socket:
    """A socket bound to a free loopback port, handed to uvicorn as is: no port race."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class MemoryRuntime:
    """The Runtime protocol over in-process agents (see the module docstring)."""

    name = "memory"
    enforces_egress = False  # the agent runs in the gateway's own process, on the host's network

    def __init__(self, settings: Settings) -> None:
        self._root = settings.state_dir / "memory" / settings.install
        self._start_timeout = settings.start_timeout
        self._stop_grace = settings.process_stop_grace
        self._sandboxes: dict[UUID, _Sandbox] = {}
        self._starting: set[UUID] = set()
        self._templates = MemoryTemplates(
            lambda: {sandbox.spec.template for sandbox in self._sandboxes.values()}
        )

    def folder(self, conversation_id: UUID) -> Path:
        """Where the sandbox of ``conversation_id`` keeps its workspace and state."""
        return self._root / str(conversation_id)

    # --- start ------------------------------------------------------------------------

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        if spec.conversation_id in self._sandboxes:
            raise SandboxStartError(f"a sandbox for conversation {spec.conversation_id} already exists")
        folder = self.folder(spec.conversation_id)
        if progress:
            await progress("preparing the workspace")
        try:
            await asyncio.to_thread(self._prepare, folder)
        except FileExistsError:
            raise SandboxStartError(f"{folder} exists already (left by another instance?)") from None
        except OSError as error:
            await asyncio.to_thread(shutil.rmtree, folder, True)  # whatever part of it was made
            raise SandboxStartError(f"the workspace could not be made: {error}") from None
        self._starting.add(spec.conversation_id)
        try:
            if progress:
                await progress("starting the agent")
            try:
                sandbox = self._launch(spec, folder)
            except OSError as error:
                raise SandboxStartError(f"the agent could not be served: {error}") from None
            if progress:
                await progress("waiting for the agent")

            async def alive() -> bool:
                return sandbox.task is not None and not sandbox.task.done()

            try:
                await wait_until_ready(sandbox.base_url, within=self._start_timeout, alive=alive)
            except SandboxStartError as error:
                reason = f"{error}: {sandbox.reason}" if sandbox.reason else str(error)
                raise SandboxStartError(reason) from None
            sandbox.ready = True
            return sandbox.handle()
        except BaseException:
            # Cancelled or failed: leave nothing behind, then tell the caller.
            await asyncio.shield(self.remove(spec.conversation_id))
            raise
        finally:
            self._starting.discard(spec.conversation_id)

    @staticmethod
    def _prepare(folder: Path) -> None:
        folder.mkdir(parents=True, mode=0o700)
        (folder / "workspace").mkdir(mode=0o700)
        (folder / "state").mkdir(mode=0o700)

    def _launch(self, spec: SandboxSpec, folder: Path) -> _Sandbox:
        agent = AgentSettings(
            workspace=folder / "workspace",
            state_dir=folder / "state",
            token=spec.token,
            unprotected=False,
            conversation_id=spec.conversation_id,
            template=spec.template,
        )
        config = _AgentConfig(
            create_app(agent),
            access_log=False,
            http="h11",
            lifespan="on",
            ws_max_size=agent.max_event_bytes,
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=math.ceil(self._stop_grace),
        )
        sock = _listening_socket()
        port = sock.getsockname()[1]
        sandbox = _Sandbox(spec, folder, f"http://127.0.0.1:{port}", _AgentServer(config))
        self._sandboxes[spec.conversation_id] = sandbox
        sandbox.task = asyncio.create_task(self._serve(sandbox, sock), name=f"agent {spec.conversation_id}")
        return sandbox

    @staticmethod
    async def _serve(sandbox: _Sandbox, sock: socket.socket) -> None:
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

    # --- find / list ------------------------------------------------------------------

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        sandbox = self._sandboxes.get(conversation_id)
        return None if sandbox is None else sandbox.handle()

    async def list(self) -> list[SandboxHandle]:
        return [sandbox.handle() for sandbox in list(self._sandboxes.values())]

    # --- stop / remove ----------------------------------------------------------------

    async def stop_agent(self, conversation_id: UUID) -> None:
        """End the agent of a sandbox but keep the sandbox: it is EXITED (exit code 0)
        until removed, as a sandbox whose agent ended on its own. For tests of what
        follows an exit."""
        sandbox = self._sandboxes.get(conversation_id)
        if sandbox is not None:
            await self._stop(sandbox)

    async def _stop(self, sandbox: _Sandbox) -> None:
        """A graceful shutdown (connections closed, tasks cancelled, event log flushed);
        cancelled when it takes more than the grace period and a margin."""
        task = sandbox.task
        if task is None or task.done():
            return
        sandbox.server.should_exit = True
        await asyncio.wait({task}, timeout=self._stop_grace + _STOP_MARGIN)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def remove(self, conversation_id: UUID) -> bool:
        sandbox = self._sandboxes.get(conversation_id)
        if sandbox is not None:
            await self._stop(sandbox)
            if self._sandboxes.get(conversation_id) is sandbox:
                del self._sandboxes[conversation_id]
        folder = self.folder(conversation_id)
        existed = await asyncio.to_thread(folder.exists)
        if existed:
            await self._remove_folder(folder)
        return sandbox is not None or existed

    @staticmethod
    async def _remove_folder(folder: Path) -> None:
        try:
            await asyncio.to_thread(shutil.rmtree, folder)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise RuntimeFailure(f"the sandbox's folder {folder} could not be removed: {error}") from None

    async def cleanup_orphans(self) -> int:
        removed = 0
        for conversation_id, sandbox in list(self._sandboxes.items()):
            if conversation_id not in self._starting and sandbox.task is not None and sandbox.task.done():
                removed += await self.remove(conversation_id)
        for folder in await asyncio.to_thread(self._folders):
            try:
                conversation_id = UUID(folder.name)
            except ValueError:
                continue  # not ours
            if conversation_id not in self._sandboxes and conversation_id not in self._starting:
                await self._remove_folder(folder)
                removed += 1
        return removed

    def _folders(self) -> builtins.list[Path]:
        if not self._root.is_dir():
            return []
        return [folder for folder in self._root.iterdir() if folder.is_dir()]

    # --- templates: a catalogue in memory (see gateway.runtimes.template_catalog) -----

    async def templates(self) -> builtins.list[Template]:
        return await self._templates.templates()

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template:
        return await self._templates.build_template(name, source, progress)

    async def remove_template(self, name: str) -> None:
        await self._templates.remove_template(name)

    async def close(self) -> None:
        """Stop every agent (their sandboxes stay listed, EXITED, until removed): an
        agent cannot outlive the gateway's process, and stopped here it ends its tasks'
        process groups and flushes its event log, which a process exit would not."""
        await asyncio.gather(*(self._stop(sandbox) for sandbox in list(self._sandboxes.values())))
