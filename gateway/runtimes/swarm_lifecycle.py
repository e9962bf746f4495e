"""Pause, resume, snapshots and workspace seeds on a swarm (mixed into :class:`SwarmRuntime`).

The manager can neither freeze a task nor reach another node's volume, so both go
through the sandbox's agent, over its relay (the gateway's own calls, with the
agent token, never proxied):

- **Pause** is the agent's ``POST /freeze`` (SIGSTOP to every process it started,
  answered once they are stopped: :mod:`sandbox_agent.freezer`), then a **paused
  config** (``-p``, kind ``paused``) beside the token: what any gateway reads as
  PAUSED, after a restart too (a config, not a service label: a service update
  is never needed, so a task is never restarted). **Resume** thaws first (``POST
  /thaw``, idempotent), then removes the config: a failure between the two leaves
  it PAUSED while it runs, and the next request resumes it again; never frozen
  while it says RUNNING. The agent itself keeps answering while paused.
- A **snapshot** is the agent's ``GET /workspace-archive`` (a tar, streamed) kept
  by an :class:`~gateway.runtimes.snapshot_archives.ArchiveStore` under
  ``swarm_snapshot_dir`` (which several gateways must share). A running sandbox
  is paused (as above, so a gateway killed meanwhile leaves it PAUSED, not
  stopped unseen) while it is read, so the copy is of one moment.
- A **seed** (start from a snapshot, fork) fills the new sandbox's workspace with
  ``PUT /workspace-archive`` once its agent is ready and before :meth:`start`
  returns, so no client sees it empty; a fork streams the original's archive
  (the original paused meanwhile) straight into the new one, nothing staged.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator
from uuid import UUID

import httpx

from gateway.errors import EngineNotFound, RuntimeFailure, SandboxStartError
from gateway.runtimes import swarm_config as scfg
from gateway.runtimes.base import SandboxHandle, SandboxState, SnapshotInfo, WorkspaceSeed
from gateway.runtimes.snapshot_archives import ArchiveStore
from gateway.runtimes.swarm_engine import SwarmEngine
from sandbox_agent.protocol import PASSIVE_HEADER, TOKEN_HEADER

#: Seconds a freeze or thaw may take (the agent answers once every process is stopped: 5 s at most).
FREEZE_TIMEOUT = 20.0
#: Seconds without a byte before an archive transfer counts as stuck.
ARCHIVE_TIMEOUT = 120.0
PAUSED = "paused"


def _own(handle: SandboxHandle) -> dict[str, str]:
    return {TOKEN_HEADER: handle.token, PASSIVE_HEADER: "1"}


class SwarmLifecycle:
    """The lifecycle and snapshot blocks of the Runtime protocol on a swarm."""

    _engine: SwarmEngine
    _install: str
    _archives: ArchiveStore
    _lifecycle_http: httpx.AsyncClient | None = None

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        raise NotImplementedError

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._lifecycle_http is None:
            self._lifecycle_http = httpx.AsyncClient(timeout=ARCHIVE_TIMEOUT)
        return self._lifecycle_http

    async def _close_lifecycle(self) -> None:
        if self._lifecycle_http is not None:
            await self._lifecycle_http.aclose()
            self._lifecycle_http = None

    # --- pause / resume ---------------------------------------------------------------

    async def pause(self, conversation_id: UUID) -> SandboxHandle:
        return await self._set_paused(conversation_id, True)

    async def resume(self, conversation_id: UUID) -> SandboxHandle:
        return await self._set_paused(conversation_id, False)

    async def _found(self, conversation_id: UUID) -> SandboxHandle:
        handle = await self.find(conversation_id)
        if handle is None:
            raise EngineNotFound(f"no sandbox for conversation {conversation_id}")
        return handle

    async def _set_paused(self, conversation_id: UUID, paused: bool) -> SandboxHandle:
        handle = await self._found(conversation_id)
        wanted = SandboxState.PAUSED if paused else SandboxState.RUNNING
        if handle.state is wanted:
            return handle
        if handle.state not in (SandboxState.RUNNING, SandboxState.PAUSED) or not handle.base_url:
            raise RuntimeFailure(f"the sandbox of {conversation_id} is {handle.state.value}")
        names = scfg.Names.of(self._install, conversation_id)
        if paused:
            await self._agent_call(handle, "/freeze")
            labels = scfg.claim_labels(self._install, conversation_id, PAUSED)
            try:
                await self._engine.create_config(names.paused_config, b"1", labels)
            except RuntimeFailure:
                with contextlib.suppress(RuntimeFailure):
                    await self._agent_call(handle, "/thaw")  # it runs on, and says so
                raise
        else:
            await self._agent_call(handle, "/thaw")
            await self._engine.remove_config(names.paused_config)
        return await self._found(conversation_id)

    async def _agent_call(self, handle: SandboxHandle, path: str) -> None:
        try:
            response = await self._http.post(
                f"{handle.base_url}{path}", headers=_own(handle), timeout=FREEZE_TIMEOUT
            )
        except httpx.HTTPError as error:
            raise RuntimeFailure(f"the sandbox's agent did not answer {path}: {error!r}") from None
        if response.status_code != 200:
            raise RuntimeFailure(
                f"the sandbox's agent refused {path} ({response.status_code}): {response.text}"
            )

    @contextlib.asynccontextmanager
    async def _held_still(self, conversation_id: UUID) -> AsyncIterator[SandboxHandle]:
        """A running sandbox is paused meanwhile (one already paused stays so)."""
        handle = await self._found(conversation_id)
        freeze = handle.state is SandboxState.RUNNING
        if freeze:
            handle = await self._set_paused(conversation_id, True)
        elif handle.state is not SandboxState.PAUSED:
            raise RuntimeFailure(f"the sandbox of {conversation_id} is {handle.state.value}")
        try:
            yield handle
        finally:
            if freeze:
                with contextlib.suppress(RuntimeFailure):
                    await self._set_paused(conversation_id, False)

    # --- snapshots --------------------------------------------------------------------

    async def snapshot(self, conversation_id: UUID, info: SnapshotInfo) -> SnapshotInfo:
        async with self._held_still(conversation_id) as handle, self._archive_of(handle) as chunks:
            return await self._archives.save(info, chunks)

    async def snapshots(self) -> builtins.list[SnapshotInfo]:
        return await self._archives.every()

    async def remove_snapshot(self, snapshot_id: UUID) -> bool:
        return await self._archives.remove(snapshot_id)

    @contextlib.asynccontextmanager
    async def _archive_of(self, handle: SandboxHandle) -> AsyncIterator[AsyncIterator[bytes]]:
        """The agent's workspace archive, as it streams in."""
        request = self._http.build_request(
            "GET", f"{handle.base_url}/workspace-archive", headers=_own(handle)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as error:
            raise RuntimeFailure(f"the sandbox's agent did not send its workspace: {error!r}") from None
        try:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeFailure(
                    f"the sandbox's agent refused its workspace ({response.status_code}): {response.text}"
                )
            yield self._relayed(response)
        finally:
            await response.aclose()

    @staticmethod
    async def _relayed(response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as error:
            raise RuntimeFailure(f"the workspace's transfer broke off: {error!r}") from None

    async def _seed(self, handle: SandboxHandle, seed: WorkspaceSeed | None) -> None:
        """Fill the new, ready sandbox's workspace from ``seed``; :class:`SandboxStartError`."""
        if seed is None:
            return
        try:
            if seed.snapshot_id is not None:
                await self._fill(handle, self._archives.chunks(seed.snapshot_id))
            elif seed.conversation_id is not None:
                async with (
                    self._held_still(seed.conversation_id) as original,
                    self._archive_of(original) as chunks,
                ):
                    await self._fill(handle, chunks)
        except RuntimeFailure as error:
            raise SandboxStartError(f"the workspace could not be filled: {error}") from None

    async def _fill(self, handle: SandboxHandle, chunks: AsyncIterator[bytes]) -> None:
        try:
            response = await self._http.put(
                f"{handle.base_url}/workspace-archive", content=chunks, headers=_own(handle)
            )
        except httpx.HTTPError as error:
            raise RuntimeFailure(f"the new sandbox's agent did not take the workspace: {error!r}") from None
        if response.status_code != 200:
            raise RuntimeFailure(
                f"the new sandbox's agent refused the workspace ({response.status_code}): {response.text}"
            )
