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

Pause only records PAUSED (an agent in the gateway's own loop cannot be frozen:
the process and Docker runtimes freeze); snapshots are folders
(:mod:`gateway.runtimes.snapshot_folders`), kept across instances.

What it does not do, by design: the spec's ``env`` and ``limits`` are not
applied (tasks run with the gateway's own environment, as children of the
gateway's process; a claimed spare's ``env`` does reach its tasks, the claim
hands it to the agent), and nothing survives the process. Tests of those, of
process groups or of agents that die use the process or the Docker runtime.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import shutil
from pathlib import Path
from uuid import UUID

from gateway.errors import ClaimFailed, EngineNotFound, RuntimeFailure, SandboxStartError
from gateway.runtimes import snapshot_folders, usage_probes
from gateway.runtimes.base import (
    ProgressCallback,
    ResourceUsage,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    wait_until_ready,
)
from gateway.runtimes.claiming import Claimer
from gateway.runtimes.folder_lifecycle import FolderSnapshots
from gateway.runtimes.memory_agents import InProcessSandbox, agent_server, listening_socket, serve
from gateway.runtimes.template_catalog import CatalogueTemplates, MemoryTemplates
from gateway.settings import Settings

#: Seconds past the graceful-shutdown timeout an agent gets to stop its tasks before it is cancelled.
_STOP_MARGIN = 10.0


class MemoryRuntime(CatalogueTemplates, FolderSnapshots):
    """The Runtime protocol over in-process agents (see the module docstring)."""

    name = "memory"
    enforces_egress = False  # the agent runs in the gateway's own process, on the host's network

    def __init__(self, settings: Settings) -> None:
        self._root = settings.state_dir / "memory" / settings.install
        self._start_timeout = settings.start_timeout
        self._stop_grace = settings.process_stop_grace
        self._sandboxes: dict[UUID, InProcessSandbox] = {}
        self._starting: set[UUID] = set()
        self._peaks = usage_probes.PeakMemory()
        self._snapshot_root = snapshot_folders.root(settings.state_dir, settings.install)
        self._claimer = Claimer()
        self._templates = MemoryTemplates(
            lambda: {sandbox.spec.template for sandbox in self._sandboxes.values()}
        )

    def _workspace(self, conversation_id: UUID) -> Path:
        return self.folder(conversation_id) / "workspace"

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
            try:
                await self.seed_workspace(folder / "workspace", spec.seed)
            except (RuntimeFailure, OSError) as error:
                raise SandboxStartError(f"the workspace could not be filled: {error}") from None
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

    def _launch(self, spec: SandboxSpec, folder: Path) -> InProcessSandbox:
        server = agent_server(spec, folder, self._stop_grace)
        sock = listening_socket()
        port = sock.getsockname()[1]
        sandbox = InProcessSandbox(spec, folder, f"http://127.0.0.1:{port}", server)
        self._sandboxes[spec.conversation_id] = sandbox
        sandbox.task = asyncio.create_task(serve(sandbox, sock), name=f"agent {spec.conversation_id}")
        return sandbox

    # --- find / list ------------------------------------------------------------------

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        sandbox = self._sandboxes.get(conversation_id)
        return None if sandbox is None else sandbox.handle()

    async def list(self) -> list[SandboxHandle]:
        return [sandbox.handle() for sandbox in list(self._sandboxes.values())]

    # --- lifecycle: pause and resume (recorded only: see the module docstring) --------

    async def pause(self, conversation_id: UUID) -> SandboxHandle:
        return self._set_paused(conversation_id, True)

    async def resume(self, conversation_id: UUID) -> SandboxHandle:
        return self._set_paused(conversation_id, False)

    def _set_paused(self, conversation_id: UUID, paused: bool) -> SandboxHandle:
        sandbox = self._sandboxes.get(conversation_id)
        if sandbox is None:
            raise EngineNotFound(f"no sandbox for conversation {conversation_id}")
        if sandbox.handle().state not in (SandboxState.RUNNING, SandboxState.PAUSED):
            raise RuntimeFailure(f"the sandbox of {conversation_id} is {sandbox.handle().state.value}")
        sandbox.paused = paused
        return sandbox.handle()

    # --- the pool ---------------------------------------------------------------------

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        sandbox = self._sandboxes.get(spare.conversation_id)
        if sandbox is None:
            raise ClaimFailed(f"the spare {spare.conversation_id} is gone")
        handle = await self._claimer.claim(spare, spec)
        sandbox.spec = handle.spec  # this instance's memory is the registry
        return handle

    # --- stop / remove ----------------------------------------------------------------

    async def stop_agent(self, conversation_id: UUID) -> None:
        """End the agent of a sandbox but keep the sandbox: it is EXITED (exit code 0)
        until removed, as a sandbox whose agent ended on its own. For tests of what
        follows an exit."""
        sandbox = self._sandboxes.get(conversation_id)
        if sandbox is not None:
            await self._stop(sandbox)

    async def _stop(self, sandbox: InProcessSandbox) -> None:
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
        self._peaks.forget(conversation_id)
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

    # --- usage (issue 14) ------------------------------------------------------------

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        """Its task processes and its workspace (:func:`usage_probes.in_process_usage`):
        the agent itself shares the gateway's process and is not counted; network ``None``."""
        sandbox = self._sandboxes.get(conversation_id)
        if sandbox is None or sandbox.task is None or sandbox.task.done():
            return None
        folder = sandbox.folder
        found = await asyncio.to_thread(usage_probes.in_process_usage, folder, folder / "workspace")
        return self._peaks.update(conversation_id, found)

    async def close(self) -> None:
        """Stop every agent (their sandboxes stay listed, EXITED, until removed): an
        agent cannot outlive the gateway's process, and stopped here it ends its tasks'
        process groups and flushes its event log, which a process exit would not."""
        await asyncio.gather(*(self._stop(sandbox) for sandbox in list(self._sandboxes.values())))
        await self._claimer.close()
