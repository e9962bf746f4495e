"""ProcessRuntime: one local ``python -m sandbox_agent`` process per conversation.

No isolation and no Docker: for development, tests and machines without an
engine. Each sandbox is a directory ``<state_dir>/<install>/<conversation_id>/``
holding

- ``meta.json``: the :class:`SandboxSpec` (token included; the file is 0600),
  the agent's pid, its start time, its port and whether it has answered
  ``/ready`` yet: the registry that lets a restarted gateway rebuild everything
  from :meth:`ProcessRuntime.list` (STARTING until ready, RUNNING while the
  agent lives, EXITED with its last output as the reason once it is gone);
- ``workspace/`` and ``state/``: the agent's workspace and event log;
- ``agent.log``: the agent's stdout and stderr, whose tail is the reason of a
  :class:`SandboxStartError` and of an EXITED handle;
- ``token`` (0600): the agent's token, which it reads at start-up
  (``CONVOY_AGENT_TOKEN_FILE``), so the token is in no process's environment;
  a spare's (``spec.pool`` set, started ``--spare``) holds its claim secret;
- ``claim.json``: a claimed spare's claim, written by its agent; the metadata's
  spec is rewritten after the claim, and a claim file wins over a spare spec.

Several gateways sharing one state dir are one installation: each lists and
finds every folder; the metadata and token (0600, in folders 0700) are what
each needs to reach an agent, readable by the user running the gateways only.
Clean-up leaves a folder whose metadata is not written yet alone while it is
younger than a start may take (another gateway's start in progress).

The agent runs in a session of its own and is not a child of the gateway: a
tiny launcher (an asyncio subprocess) starts it with ``start_new_session`` and
exits. So a gateway stopped, or killed with SIGKILL, leaves its agents running
(asyncio would kill a child whose transport is closed or collected), and agents
started by this gateway and agents adopted after a restart are watched the same
way: by pid and start time (see :mod:`gateway.runtimes.procfs`). Not being its
parent, the runtime cannot know an agent's exit code: EXITED handles have none.

Pause and resume: see :mod:`gateway.runtimes.process_freezer` (``"paused"``
in ``meta.json`` is the state a restarted gateway reads). Snapshots are folders
beside the sandboxes' (:mod:`gateway.runtimes.snapshot_folders`); a snapshot or
fork of a running sandbox freezes it while its workspace is copied.

OSError (a full disk, a folder it may not read) is mapped here to
:class:`SandboxStartError` (in a start) or :class:`RuntimeFailure`.

Environment: the agent gets the spec's ``env`` over a small allow-list of the
gateway's own variables (never the gateway's keys), then its own
``CONVOY_AGENT_TOKEN_FILE`` and ``CONVOY_CONVERSATION_ID``, which nothing in
the spec can override (names starting with ``CONVOY_`` are dropped; the API
refuses them with 422). The agent's tasks run as the gateway's user: this
runtime isolates nothing, and a task could read the token file like any file
of that user; it only keeps the token out of every environment.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from gateway.errors import RuntimeFailure, SandboxStartError
from gateway.runtimes import process_files as files
from gateway.runtimes import procfs, snapshot_folders, usage_probes
from gateway.runtimes.base import (
    ClaimFailed,
    ProgressCallback,
    ResourceUsage,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    wait_until_ready,
)
from gateway.runtimes.claiming import Claimer
from gateway.runtimes.folder_lifecycle import FolderSnapshots
from gateway.runtimes.process_freezer import ProcessPausing
from gateway.runtimes.process_launcher import TOKEN, free_port, launch, stop
from gateway.runtimes.template_catalog import CatalogueTemplates, DefaultTemplateOnly
from gateway.settings import Settings

_T = TypeVar("_T")
#: Seconds past the start timeout after which a STARTING sandbox is taken for half-made.
_HALF_MADE_MARGIN = 30.0


async def _io(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)`` in a thread, its OSError a :class:`RuntimeFailure`."""
    try:
        return await asyncio.to_thread(call, *args)
    except OSError as error:
        raise RuntimeFailure(f"the process runtime's state could not be read or written: {error}") from None


class ProcessRuntime(CatalogueTemplates, ProcessPausing, FolderSnapshots):
    """The Runtime protocol over local agent processes (see the module docstring)."""

    name = "process"
    enforces_egress = False  # a local process shares the host's network: nothing to enforce with

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._root = settings.state_dir / settings.install
        self._starting: set[UUID] = set()
        self._peaks = usage_probes.PeakMemory()
        self._snapshot_root = snapshot_folders.root(settings.state_dir, settings.install)
        self._claimer = Claimer()
        self._templates = DefaultTemplateOnly("process", "the gateway's own Python, as a local process")

    # --- paths and metadata (blocking; run in threads) ----------------------------

    def _dir(self, conversation_id: UUID) -> Path:
        return self._root / str(conversation_id)

    def _workspace(self, conversation_id: UUID) -> Path:
        return self._dir(conversation_id) / "workspace"

    def _scan(self) -> list[tuple[Path, dict[str, Any] | None]]:
        if not self._root.is_dir():
            return []
        return [
            (folder, files.read_meta(folder)) for folder in sorted(self._root.iterdir()) if folder.is_dir()
        ]

    # --- Runtime protocol ---------------------------------------------------------

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        if spec.egress is not None:
            raise SandboxStartError("the process runtime cannot enforce an egress allow-list")
        folder = self._dir(spec.conversation_id)
        deadline = time.monotonic() + self._settings.start_timeout
        if progress:
            await progress("preparing the workspace")
        try:
            await asyncio.to_thread(self._prepare, folder)
        except OSError as error:
            await asyncio.shield(self.remove(spec.conversation_id))
            raise SandboxStartError(f"the sandbox's folder could not be made: {error}") from None
        self._starting.add(spec.conversation_id)
        launched: procfs.ProcessId | None = None  # the agent, before its metadata names it
        try:
            # Registered at once (STARTING, no agent yet): every gateway of the installation
            # counts it against the limits from now on (gateway.limits).
            await self._save_meta(folder, {"spec": files.spec_to_json(spec), "ready": False})
            try:
                await self.seed_workspace(folder / "workspace", spec.seed)
            except (RuntimeFailure, OSError) as error:
                raise SandboxStartError(f"the workspace could not be filled: {error}") from None
            await asyncio.to_thread(files.write_private, folder, TOKEN, spec.token)
            for attempt in range(3):
                port = free_port()
                if progress:
                    await progress("starting the agent")
                process = launched = await launch(spec, folder, port)
                meta = {"spec": files.spec_to_json(spec), "pid": process.pid, "started": process.started}
                meta |= {"port": port, "ready": False}
                await self._save_meta(folder, meta)
                if progress:
                    await progress("waiting for the agent")
                base_url = f"http://127.0.0.1:{port}"

                async def alive(process: procfs.ProcessId = process) -> bool:
                    return await asyncio.to_thread(procfs.is_alive, process)

                try:
                    await wait_until_ready(
                        base_url, within=max(0.1, deadline - time.monotonic()), alive=alive
                    )
                except SandboxStartError as error:
                    await self._stop(process)
                    tail = await asyncio.to_thread(files.log_tail, folder)
                    # Another program may take the free port between our probe and the agent's bind.
                    if "address already in use" in tail.lower() and attempt < 2:
                        continue
                    raise SandboxStartError(
                        f"{error}; the agent's last output:\n{tail}" if tail else str(error)
                    ) from None
                await self._save_meta(folder, meta | {"ready": True})
                return SandboxHandle(spec=spec, base_url=base_url, state=SandboxState.RUNNING)
            raise SandboxStartError("no free port could be bound")  # pragma: no cover
        except BaseException:
            # Cancelled or failed: leave nothing behind, then tell the caller. The agent is stopped
            # by name: a cancelled metadata write may not have named it yet (or still be writing).
            if launched is not None:
                await asyncio.shield(self._stop(launched))
            await asyncio.shield(self.remove(spec.conversation_id))
            raise
        finally:
            self._starting.discard(spec.conversation_id)

    async def _save_meta(self, folder: Path, meta: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(files.write_meta, folder, meta)
        except OSError as error:
            raise SandboxStartError(f"the sandbox's metadata could not be written: {error}") from None

    def _prepare(self, folder: Path) -> None:
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            raise SandboxStartError(f"a sandbox for this conversation already exists ({folder})") from None
        (folder / "workspace").mkdir(mode=0o700)
        (folder / "state").mkdir(mode=0o700)

    async def _stop(self, process: procfs.ProcessId) -> None:
        """SIGTERM, ``process_stop_grace``, SIGKILL; returns once the agent and its tasks are gone."""
        await stop(process, self._settings.process_stop_grace)

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        folder = self._dir(spare.conversation_id)
        data = await _io(files.read_meta, folder)
        if data is None:
            raise ClaimFailed(f"the spare {spare.conversation_id} is gone")
        handle = await self._claimer.claim(spare, spec)
        # The agent keeps the claim (and files.handle reads it); the metadata follows.
        await _io(files.write_meta, folder, data | {"spec": files.spec_to_json(handle.spec)})
        return handle

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        folder = self._dir(conversation_id)
        data = await _io(files.read_meta, folder)
        return None if data is None else await _io(files.handle, folder, data)

    async def list(self) -> list[SandboxHandle]:
        def scan() -> list[SandboxHandle]:
            handles = (files.handle(folder, data) for folder, data in self._scan() if data is not None)
            return [handle for handle in handles if handle is not None]

        return await _io(scan)

    async def remove(self, conversation_id: UUID) -> bool:
        folder = self._dir(conversation_id)
        data = await _io(files.read_meta, folder)
        if data is not None and "pid" in data:
            await self._stop(procfs.ProcessId(int(data["pid"]), data.get("started")))
        else:  # a launch whose gateway died before it wrote the pid: found by its command line
            for process in await asyncio.to_thread(procfs.agents_of, folder / "state"):
                await self._stop(process)
        self._peaks.forget(conversation_id)
        if not await asyncio.to_thread(folder.exists):
            return False
        await asyncio.to_thread(shutil.rmtree, folder, True)
        return True

    async def cleanup_orphans(self) -> int:
        removed = 0
        for folder, data in await _io(self._scan):
            try:
                conversation_id = UUID(folder.name)
            except ValueError:
                continue  # not ours
            if conversation_id in self._starting:
                continue
            if data is None and await _io(self._young, folder):
                continue  # another gateway's start, before its metadata is written
            handle = None if data is None else await _io(files.handle, folder, data)
            if handle is None or handle.state is SandboxState.EXITED or self._half_made(handle):
                removed += await self.remove(conversation_id)
        return removed

    # --- usage (issue 14) ------------------------------------------------------------

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        """The agent's process, its descendants (tasks lead groups of their own) and its
        workspace, from ``/proc``; network ``None`` (see :func:`usage_probes.agent_usage`)."""
        folder = self._dir(conversation_id)
        data = await _io(files.read_meta, folder)
        if data is None or "pid" not in data:
            return None
        agent = procfs.ProcessId(int(data["pid"]), data.get("started"))
        found = await _io(usage_probes.agent_usage, agent, folder / "workspace")
        return None if found is None else self._peaks.update(conversation_id, found)

    def _young(self, folder: Path) -> bool:
        """Made less than a start timeout (and a margin) ago: a start of another gateway of the
        installation (sharing this state dir) may be writing it (blocking)."""
        try:
            age = time.time() - folder.stat().st_mtime
        except FileNotFoundError:
            return False  # removed meanwhile: nothing to spare
        return age < self._settings.start_timeout + _HALF_MADE_MARGIN

    def _half_made(self, handle: SandboxHandle) -> bool:
        """STARTING for longer than any start may take: a gateway died during its start (it
        is never adopted, being no RUNNING sandbox, and would otherwise stay for good)."""
        age = time.time() - handle.spec.created_at.timestamp()
        limit = self._settings.start_timeout + _HALF_MADE_MARGIN
        return handle.state is SandboxState.STARTING and age > limit

    async def close(self) -> None:
        """Only the claims' HTTP client: the agents are not our children and keep running."""
        await self._claimer.close()
