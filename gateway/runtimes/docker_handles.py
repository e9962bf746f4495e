"""How the Docker runtime reads its sandboxes back from the engine, and finds what is left over.

:class:`DockerHandles` answers :meth:`find` and :meth:`list` from the containers' labels
(one handle per conversation: its sandbox, and its relay where it has one) and removes
orphans; :class:`~gateway.runtimes.docker_sandboxes.DockerSandboxes` adds starting and
removing. A sandbox labelled :data:`~gateway.runtimes.docker_config.NETWORK` ``none`` has no
relay: its agent is at its socket (:mod:`gateway.runtimes.docker_sockets`), and it is whole
with its container alone. What a spare became is its agent's to say
(:mod:`gateway.runtimes.docker_claims`).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import time
from collections.abc import Iterable
from typing import Any, Literal
from uuid import UUID

from gateway.agent_transport import unix_url
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState
from gateway.runtimes.claiming import Claimer
from gateway.runtimes.docker_claims import DockerClaims, without_network
from gateway.runtimes.docker_engine import by_conversation, conversation_of, quietly, summary_url, young
from gateway.runtimes.docker_lifecycle import DockerLifecycle
from gateway.runtimes.docker_removal import Removals, remove_all
from gateway.runtimes.docker_sockets import SocketDirs
from gateway.runtimes.docker_templates import DockerTemplates

Reach = Literal["published", "network"]
LOG_TAIL_LINES = 20
_STATES = {
    "created": SandboxState.STARTING,
    "running": SandboxState.RUNNING,
    "restarting": SandboxState.RUNNING,
    "paused": SandboxState.PAUSED,
}
_LIVE_STATES = ("running", "paused")
#: Seconds a listing of list() serves cleanup_orphans() (see _fresh_listing).
LISTING_REUSE = 2.0
#: Handles built between two turns of the event loop.
_SLICE = 200
#: A socket's URL, encoded once per path rather than at every listing (one per sandbox).
_socket_url = functools.lru_cache(maxsize=8192)(unix_url)


class DockerHandles(DockerClaims, DockerLifecycle):
    """find, list, claim and cleanup_orphans of the Runtime protocol on Docker."""

    _install: str
    _removals: Removals
    _sockets: SocketDirs
    _specs: dict[str, SandboxSpec]
    _claimed: dict[UUID, SandboxSpec]
    _claimer: Claimer
    _templates: DockerTemplates
    _starting: set[UUID]
    _stop_grace: float
    _listed: tuple[float, builtins.list[dict[str, Any]]]
    reach: Reach
    orphan_age: float

    # --- find / list ------------------------------------------------------------------

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        filters = cfg.install_filter(self._install, **{cfg.CONVERSATION_ID: str(conversation_id)})
        handles = await self._handles(filters)
        return handles[0] if handles else None

    async def list(self) -> list[SandboxHandle]:
        known_before = set(self._specs)  # a spec learned while the engine answers is kept
        summaries = await self._engine.containers(cfg.install_filter(self._install))
        self._listed = (time.monotonic(), summaries)
        for gone in known_before - {summary["Id"] for summary in summaries}:
            self._specs.pop(gone, None)  # a removed container's spec (else kept for the gateway's life)
        return await self._handles_of(summaries)

    async def _handles(self, filters: dict[str, builtins.list[str]]) -> builtins.list[SandboxHandle]:
        return await self._handles_of(await self._engine.containers(filters))

    async def _handles_of(self, summaries: builtins.list[dict[str, Any]]) -> builtins.list[SandboxHandle]:
        """The handles of ``summaries``, in their order. Most are of known, running sandboxes:
        built here at once, with no engine call and no task of their own (a listing of hundreds
        of sandboxes every ``sync_interval`` would otherwise make hundreds of tasks that hold the
        event loop together); only those the engine must be asked about are looked at concurrently."""
        groups = [
            group
            for conversation, group in by_conversation(summaries).items()
            if cfg.SANDBOX in group and not self._removals.pending(conversation)
        ]
        asked = {index: group for index, group in enumerate(groups) if self._needs_engine(group[cfg.SANDBOX])}
        looked = await asyncio.gather(*(self._handle(group) for group in asked.values()))
        answers = dict(zip(asked, looked, strict=True))
        found: builtins.list[SandboxHandle | None] = []
        for index, group in enumerate(groups):
            if index % _SLICE == _SLICE - 1:
                await asyncio.sleep(0)  # requests are served between two slices of a long listing
            found.append(answers[index] if index in asked else self._known(group))
        return [handle for handle in found if handle is not None]

    def _needs_engine(self, sandbox: dict[str, Any]) -> bool:
        """Whether a sandbox's handle needs an engine call: its spec is not known yet, it exited
        (its state and logs say why), or it is a spare whose claim is not known here."""
        if sandbox.get("State") == "removing":
            return False
        spec = self._specs.get(sandbox["Id"])
        if spec is None or _STATES.get(sandbox.get("State", ""), SandboxState.EXITED) is SandboxState.EXITED:
            return True
        return spec.pool is not None and spec.conversation_id not in self._claimed

    def _known(self, group: dict[str, dict[str, Any]]) -> SandboxHandle | None:
        """The handle of a sandbox :meth:`_needs_engine` says needs no engine call."""
        sandbox = group[cfg.SANDBOX]
        if sandbox.get("State") == "removing":
            return None  # on its way to absent (a removal by this or another gateway)
        spec = self._specs[sandbox["Id"]]
        if spec.pool is not None:
            spec = self._claimed[spec.conversation_id]
        return self._built(group, spec, None, "")

    async def _handle(self, group: dict[str, dict[str, Any]]) -> SandboxHandle | None:
        sandbox = group[cfg.SANDBOX]
        if sandbox.get("State") == "removing":
            return None  # on its way to absent (a removal by this or another gateway)
        state = _STATES.get(sandbox.get("State", ""), SandboxState.EXITED)
        spec = self._specs.get(sandbox["Id"])
        info: dict[str, Any] | None = None
        if spec is None or state is SandboxState.EXITED:
            info = await self._engine.inspect(sandbox["Id"])
            names = cfg.Names.of(self._install, UUID(sandbox["Labels"][cfg.CONVERSATION_ID]))
            token = spec.token if spec is not None else await self._token(sandbox, names)
            spec = cfg.spec_from_container(info, token) if info else None
            if spec is None:
                return None
            self._specs[sandbox["Id"]] = spec
        if spec.pool is not None:
            url = self._agent_url(group, cfg.Names.of(self._install, spec.conversation_id))
            spec = await self._claimed_spec(sandbox, spec, url)
        tail = ""
        if state is SandboxState.EXITED:
            tail = await quietly(self._engine.logs(sandbox["Id"], LOG_TAIL_LINES)) or ""
        return self._built(group, spec, info, tail)

    def _built(
        self, group: dict[str, dict[str, Any]], spec: SandboxSpec, info: dict[str, Any] | None, tail: str
    ) -> SandboxHandle:
        """The handle of one conversation's containers: ``info`` (an EXITED sandbox's inspect)
        and ``tail`` (its last log lines) say why it ended."""
        sandbox, relay = group[cfg.SANDBOX], group.get(cfg.RELAY)
        names = cfg.Names.of(self._install, spec.conversation_id)  # a claimed spare keeps its id
        state = _STATES.get(sandbox.get("State", ""), SandboxState.EXITED)
        relayless = without_network(sandbox)
        base_url = self._agent_url(group, names)
        if state is SandboxState.EXITED:
            status = (info or {}).get("State") or {}
            reason = cfg.exit_reason(status) + (f"\nlast log lines:\n{tail.strip()}" if tail.strip() else "")
            return SandboxHandle(
                spec=spec,
                base_url=base_url or "",
                state=state,
                exit_code=status.get("ExitCode"),
                oom_killed=bool(status.get("OOMKilled")),
                reason=reason,
            )
        if relayless:
            return SandboxHandle(spec=spec, base_url=base_url or "", state=state)
        if self._relay_starting(sandbox, relay):
            return SandboxHandle(spec=spec, base_url=base_url or "", state=SandboxState.STARTING)
        relay_gone = relay is None or relay.get("State") != "running"
        if state in (SandboxState.RUNNING, SandboxState.PAUSED) and relay_gone:
            gone = "its relay container is gone"
            return SandboxHandle(spec=spec, base_url=base_url or "", state=SandboxState.EXITED, reason=gone)
        return SandboxHandle(spec=spec, base_url=base_url or "", state=state)

    def _agent_url(self, group: dict[str, dict[str, Any]], names: cfg.Names) -> str | None:
        """Where a conversation's agent answers: its socket (no relay), else its relay's."""
        sandbox, relay = group[cfg.SANDBOX], group.get(cfg.RELAY)
        if without_network(sandbox):  # the socket where the gateway that started it made it
            socket = (sandbox.get("Labels") or {}).get(cfg.AGENT_SOCKET_PATH) or self._sockets.socket(names)
            return _socket_url(socket)
        if self.reach == "published":
            return summary_url(relay)
        return f"http://{names.relay}:{cfg.AGENT_PORT}"

    def _relay_starting(self, sandbox: dict[str, Any], relay: dict[str, Any] | None) -> bool:
        """The sandbox runs and its relay is created but not started yet: a start under way (in
        any gateway of the installation: it starts the relay right after the sandbox)."""
        return (
            sandbox.get("State") == "running"
            and relay is not None
            and relay.get("State") == "created"
            and young(relay.get("Created"), self.orphan_age)
        )

    # --- the pool ---------------------------------------------------------------------

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        handle = await self._claimer.claim(spare, spec)
        self._claimed[spec.conversation_id] = handle.spec
        return handle

    # --- orphans ----------------------------------------------------------------------

    async def cleanup_orphans(self) -> int:
        """Remove conversations whose sandbox exited or lost its relay (call :meth:`list`
        first to learn why they ended), and volumes, networks and socket directories of this
        installation that no container uses. Leaves alone what is being started."""
        removed = 0
        groups = by_conversation(await self._fresh_listing())
        for conversation, group in groups.items():
            if conversation in self._starting or self._removals.pending(conversation):
                continue
            sandbox, relay = group.get(cfg.SANDBOX), group.get(cfg.RELAY)
            if _under_way(group.values(), self.orphan_age):
                continue  # a start of another gateway of the installation, half-way
            healthy = (
                sandbox is not None
                and sandbox.get("State") in _LIVE_STATES
                and (relay.get("State") == "running" if relay is not None else without_network(sandbox))
            )
            if not healthy:
                names = cfg.Names.of(self._install, conversation)
                await remove_all(self._engine, names, self._stop_grace, self._sockets)
                removed += 1
        removed += await self._remove_old_helpers(self.orphan_age)
        volumes, networks = await asyncio.gather(
            self._engine.volumes(cfg.install_filter(self._install)),
            self._engine.networks(cfg.install_filter(self._install)),
        )
        for kind, items, key in (("volume", volumes, "CreatedAt"), ("network", networks, "Created")):
            for item in items:
                owner = conversation_of(item.get("Labels"))
                if owner is None or owner in groups or owner in self._starting:
                    continue
                if self._removals.pending(owner):
                    continue
                if young(item.get(key), self.orphan_age):
                    continue
                remover = self._engine.remove_volume if kind == "volume" else self._engine.remove_network
                removed += int(await remover(item["Name"]))
        owned = set(groups) | self._starting
        for conversation in await self._sockets.orphans(owned, self.orphan_age):
            if not self._removals.pending(conversation):
                removed += int(await self._sockets.remove(cfg.Names.of(self._install, conversation)))
        return removed + await self._templates.remove_dangling(self.orphan_age)

    async def _fresh_listing(self) -> builtins.list[dict[str, Any]]:
        """This installation's containers: those :meth:`list` just read (the reconcile lists,
        then cleans up: with hundreds of conversations each listing is megabytes of JSON
        decoded on the event loop), else read now. Starts under way here are in
        ``_starting``, those of other gateways young: neither is taken for an orphan."""
        listed_at, summaries = self._listed
        if time.monotonic() - listed_at < LISTING_REUSE:
            return summaries
        return await self._engine.containers(cfg.install_filter(self._install))


def _under_way(containers: Iterable[dict[str, Any]], orphan_age: float) -> bool:
    """A conversation's containers as a start leaves them half-way (in any gateway): each one
    created (or running, but then another still only created), the newest younger than
    ``orphan_age``. The sandbox and its relay are created together, then started one by one."""
    states = [container.get("State") for container in containers]
    newest = max((container.get("Created") or 0 for container in containers), default=0)
    return (
        "created" in states
        and all(state in ("created", "running") for state in states)
        and young(newest, orphan_age)
    )
