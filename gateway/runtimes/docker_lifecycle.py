"""Pause, resume, snapshots and workspace seeds on Docker (mixed into :class:`DockerSandboxes`).

- **Pause** is the engine's ``pause`` (the cgroup freezer): every process of
  the sandbox stops where it is, memory kept; the engine lists it ``paused``,
  which is the PAUSED a restarted gateway reads. The relay keeps running (it
  holds no state and its connections to the frozen agent simply wait).
- A **snapshot** is a volume of its own, ``convoy-<install>-snapshot-<id>``,
  holding ``workspace/`` (owners and modes kept), labelled ``convoy.install``,
  ``convoy.role=snapshot``, ``convoy.snapshot-id``, ``convoy.owner``,
  ``convoy.created-at``, ``convoy.snapshot-name``, ``convoy.snapshot-size``
  and ``convoy.snapshot-of`` (the conversation). It has no
  ``convoy.conversation-id`` label: removing a conversation or cleaning up
  orphans never touches it.
- Copies are made by a short-lived **helper** container of the sandbox image
  (``convoy.role=helper``): no network, root with only the capabilities a
  ``cp -a`` needs, read-only root, small limits; the source mounted read-only.
  A running sandbox is frozen while its workspace is measured and copied, so
  the copy is of one moment (a gateway killed meanwhile leaves it paused: the
  next one adopts it PAUSED, and the next request resumes it). A helper left by
  a killed gateway is removed by :meth:`DockerSandboxes.cleanup_orphans` once it
  is older than ``orphan_age``.
"""

from __future__ import annotations

import builtins
import contextlib
import shlex
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from gateway.errors import EngineError, EngineNotFound, RuntimeFailure, SandboxStartError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle, SandboxState, SnapshotInfo, WorkspaceSeed
from gateway.runtimes.docker_engine import Engine, young
from gateway.runtimes.docker_token import DATA_DIR

SNAPSHOT, HELPER = "snapshot", "helper"
SNAPSHOT_ID = "convoy.snapshot-id"
SNAPSHOT_NAME = "convoy.snapshot-name"
SNAPSHOT_SIZE = "convoy.snapshot-size"
SNAPSHOT_OF = "convoy.snapshot-of"
_HELPER_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID"]
_HELPER_MEMORY = 256 * 1024 * 1024


def snapshot_volume(install: str, snapshot_id: UUID) -> str:
    return f"convoy-{install}-snapshot-{snapshot_id}"


def snapshot_from_volume(volume: dict[str, Any]) -> SnapshotInfo | None:
    labels: dict[str, str] = volume.get("Labels") or {}
    try:
        return SnapshotInfo(
            id=UUID(labels[SNAPSHOT_ID]),
            owner=labels[cfg.OWNER],
            name=labels.get(SNAPSHOT_NAME, ""),
            created_at=datetime.fromisoformat(labels[cfg.CREATED_AT]),
            size=int(labels.get(SNAPSHOT_SIZE, "0")),
            conversation_id=UUID(labels[SNAPSHOT_OF]),
        )
    except (KeyError, ValueError):
        return None


class DockerLifecycle:
    """The lifecycle and snapshot blocks of the Runtime protocol on Docker."""

    _engine: Engine
    _install: str
    _policy: cfg.ContainerPolicy

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        raise NotImplementedError

    # --- pause / resume ---------------------------------------------------------------

    async def pause(self, conversation_id: UUID) -> SandboxHandle:
        return await self._freezer(conversation_id, pause=True)

    async def resume(self, conversation_id: UUID) -> SandboxHandle:
        return await self._freezer(conversation_id, pause=False)

    async def _freezer(self, conversation_id: UUID, *, pause: bool) -> SandboxHandle:
        handle = await self.find(conversation_id)
        if handle is None:
            raise EngineNotFound(f"no sandbox for conversation {conversation_id}")
        wanted = SandboxState.PAUSED if pause else SandboxState.RUNNING
        if handle.state is wanted:
            return handle
        if handle.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
            raise RuntimeFailure(f"the sandbox of {conversation_id} is {handle.state.value}")
        name = cfg.Names.of(self._install, conversation_id).sandbox
        await (self._engine.pause(name) if pause else self._engine.unpause(name))
        found = await self.find(conversation_id)
        if found is None:
            raise EngineNotFound(f"the sandbox of {conversation_id} vanished")
        return found

    @contextlib.asynccontextmanager
    async def _held_still(self, conversation_id: UUID) -> AsyncIterator[None]:
        """A running sandbox is frozen meanwhile (one already paused stays so)."""
        handle = await self.find(conversation_id)
        if handle is None:
            raise EngineNotFound(f"no sandbox for conversation {conversation_id}")
        name = cfg.Names.of(self._install, conversation_id).sandbox
        freeze = handle.state is SandboxState.RUNNING
        if freeze:
            await self._engine.pause(name)
        try:
            yield
        finally:
            if freeze:
                with contextlib.suppress(RuntimeFailure):
                    await self._engine.unpause(name)

    # --- snapshots --------------------------------------------------------------------

    async def snapshot(self, conversation_id: UUID, info: SnapshotInfo) -> SnapshotInfo:
        source = cfg.Names.of(self._install, conversation_id).volume
        volume = snapshot_volume(self._install, info.id)
        mounts = [_mount(source, "/from", read_only=True)]
        async with self._held_still(conversation_id):
            measured = await self._helper(mounts, "du -sb /from/workspace | cut -f1")
            size = int(measured.strip().splitlines()[-1]) if measured.strip() else 0
            saved = SnapshotInfo(**{**info.__dict__, "size": size})
            await self._engine.create_volume(volume, self._snapshot_labels(saved))
            try:
                await self._helper([*mounts, _mount(volume, "/to")], "cp -a /from/workspace /to/workspace")
            except BaseException:
                with contextlib.suppress(RuntimeFailure):
                    await self._engine.remove_volume(volume)
                raise
        return saved

    def _snapshot_labels(self, info: SnapshotInfo) -> dict[str, str]:
        return {
            cfg.INSTALL: self._install,
            cfg.ROLE: SNAPSHOT,
            SNAPSHOT_ID: str(info.id),
            cfg.OWNER: info.owner,
            cfg.CREATED_AT: info.created_at.isoformat(),
            SNAPSHOT_NAME: info.name,
            SNAPSHOT_SIZE: str(info.size),
            SNAPSHOT_OF: str(info.conversation_id),
        }

    async def snapshots(self) -> builtins.list[SnapshotInfo]:
        volumes = await self._engine.volumes(cfg.install_filter(self._install, **{cfg.ROLE: SNAPSHOT}))
        found = (snapshot_from_volume(volume) for volume in volumes)
        return [info for info in found if info is not None]

    async def remove_snapshot(self, snapshot_id: UUID) -> bool:
        return await self._engine.remove_volume(snapshot_volume(self._install, snapshot_id))

    async def _seed_volume(self, volume: str, seed: WorkspaceSeed | None) -> None:
        """Fill a new conversation's volume (mounted at /data, so the engine first copies
        the image's /data into it) with the workspace of a snapshot or of another sandbox."""
        if seed is None:
            return
        target = _mount(volume, DATA_DIR)
        copy = f"cp -a /from/workspace/. {DATA_DIR}/workspace/"
        if seed.snapshot_id is not None:
            source = snapshot_volume(self._install, seed.snapshot_id)
            if not await self._engine.volumes({"name": [source]}):
                raise SandboxStartError(f"snapshot {seed.snapshot_id} does not exist")
            await self._helper([_mount(source, "/from", read_only=True), target], copy)
        elif seed.conversation_id is not None:
            source = cfg.Names.of(self._install, seed.conversation_id).volume
            async with self._held_still(seed.conversation_id):
                await self._helper([_mount(source, "/from", read_only=True), target], copy)

    async def _remove_old_helpers(self, age: float) -> int:
        """Helpers older than ``age`` seconds: left by a gateway killed during a copy."""
        helpers = await self._engine.containers(cfg.install_filter(self._install, **{cfg.ROLE: HELPER}))
        old = [helper["Id"] for helper in helpers if not young(helper.get("Created"), age)]
        return sum([await self._engine.remove_container(helper) for helper in old])

    async def _helper(self, mounts: builtins.list[dict[str, Any]], script: str) -> str:
        """Run ``script`` (sh) in a helper container; its output, or :class:`EngineError`."""
        name = f"convoy-{self._install}-helper-{uuid4().hex[:12]}"
        config = {
            "Image": self._policy.image,
            "Cmd": ["sh", "-c", f"set -e; {script}"],
            "User": "0:0",
            "Labels": {cfg.INSTALL: self._install, cfg.ROLE: HELPER},
            "NetworkDisabled": True,
            "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {
                "NetworkMode": "none",
                "Mounts": mounts,
                "CapDrop": ["ALL"],
                "CapAdd": _HELPER_CAPABILITIES,
                "SecurityOpt": ["no-new-privileges"],
                "ReadonlyRootfs": True,
                "Memory": _HELPER_MEMORY,
                "MemorySwap": _HELPER_MEMORY,
                "PidsLimit": 64,
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
            },
        }
        await self._engine.create_container(name, config)
        try:
            await self._engine.start(name)
            code = await self._engine.wait(name)
            output = await self._engine.logs(name, 50)
        finally:
            with contextlib.suppress(RuntimeFailure):
                await self._engine.remove_container(name)
        if code != 0:
            raise EngineError(f"copying the workspace failed ({shlex.quote(script)}, exit {code}): {output}")
        return output


def _mount(volume: str, target: str, *, read_only: bool = False) -> dict[str, Any]:
    return {"Type": "volume", "Source": volume, "Target": target, "ReadOnly": read_only}
