"""The Docker runtime's lifecycle logic, over an :class:`Engine` (see :mod:`gateway.runtimes.docker`).

What one conversation owns, and how it is started, found, listed and removed,
is described in :mod:`gateway.runtimes.docker`; this module does it, with every
engine call behind the small typed :class:`~gateway.runtimes.docker_engine.Engine`
protocol, whose errors are already mapped (so nothing here imports aiodocker).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar
from uuid import UUID

from gateway.errors import EngineError, EngineNotFound, RuntimeFailure, RuntimeUnavailable, SandboxStartError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import docker_token, docker_usage
from gateway.runtimes.base import (
    ProgressCallback,
    ResourceLimits,
    ResourceUsage,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    Template,
    TemplateSource,
    wait_until_ready,
)
from gateway.runtimes.claiming import Claimer, claimed_spec
from gateway.runtimes.docker_engine import (
    Engine,
    by_conversation,
    conversation_of,
    summary_url,
    young,
)
from gateway.runtimes.docker_lifecycle import DockerLifecycle
from gateway.runtimes.docker_removal import Removals, remove_all
from gateway.runtimes.docker_templates import DockerTemplates
from gateway.runtimes.usage_probes import PeakMemory
from gateway.settings import Settings
from sandbox_agent.claim import Claim

Reach = Literal["published", "network"]
_T = TypeVar("_T")
_LOG_TAIL_LINES = 20
_STATES = {
    "created": SandboxState.STARTING,
    "running": SandboxState.RUNNING,
    "restarting": SandboxState.RUNNING,
    "paused": SandboxState.PAUSED,
}
_LIVE_STATES = ("running", "paused")
#: Seconds a listing of list() serves cleanup_orphans() (see _fresh_listing).
_LISTING_REUSE = 2.0


async def _no_progress(phase: str) -> None:
    return None


async def _whole(call: Awaitable[_T]) -> _T:
    """``call``'s result; a cancellation meanwhile waits for ``call`` to end (it is not
    cancelled: what it asked the engine for is made anyway), then is raised."""
    work = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # Its own failure is for the caller's clean-up to undo; a second cancel stops the wait only.
        with contextlib.suppress(BaseException):
            await asyncio.wait({work})
        raise


async def _together(*calls: Awaitable[None]) -> None:
    """Run ``calls`` concurrently, each to its end even when another fails (so a clean-up
    after the failure finds everything they made); the first failure is raised after."""
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def container_policy(settings: Settings) -> cfg.ContainerPolicy:
    """What the ``docker_*`` (and egress) settings ask of every container."""
    return cfg.ContainerPolicy(
        image=settings.docker_image,
        user=settings.docker_user,
        default_limits=ResourceLimits(settings.docker_memory, settings.docker_cpus, settings.docker_pids),
        read_only=settings.docker_read_only,
        tmpfs_bytes=settings.docker_tmpfs_bytes,
        init=settings.docker_init,
        drop_capabilities=settings.docker_drop_capabilities,
        no_new_privileges=settings.docker_no_new_privileges,
        egress_resolver=settings.egress_resolver,
    )


class DockerSandboxes(DockerLifecycle):
    """The Runtime protocol on Docker (``DockerRuntime`` adds how to connect)."""

    name = "docker"
    enforces_egress = True  # by the relay container (see docker_config.relay_config)

    def __init__(self, settings: Settings, engine: Engine, *, image_version: str, reach: Reach) -> None:
        self._engine = engine
        self._install = settings.install
        self._start_timeout = settings.start_timeout
        self._stop_grace = settings.docker_stop_grace
        self._removals = Removals(engine, settings.docker_stop_grace)
        self._listed: tuple[float, builtins.list[dict[str, Any]]] = (-_LISTING_REUSE, [])
        self._subnet_pool = settings.docker_subnet_pool
        self._policy = container_policy(settings)
        self._image_version = image_version
        self.reach: Reach = reach
        self._front_network = "bridge" if reach == "published" else settings.docker_network
        self._starting: set[UUID] = set()
        self._subnet_lock = asyncio.Lock()
        self._used_subnets: set[str] | None = None
        self._specs: dict[str, SandboxSpec] = {}  # by container id: spares an inspect per list()
        #: Claimed spares, by conversation id: their labels still say "spare" (labels are
        #: immutable); after a restart the claim is read back from the agent's claim file.
        self._claimed: dict[UUID, SandboxSpec] = {}
        self._claimer = Claimer()
        self._templates = DockerTemplates(engine, self._install, settings.docker_image)
        #: Seconds a half-made conversation (no sandbox yet, or one never started) is
        #: given before cleanup_orphans() takes it for left behind: a start of another
        #: gateway process of the same installation may still be under way.
        self.orphan_age = 60.0
        self._peaks = PeakMemory()

    # --- start ------------------------------------------------------------------------

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        names = cfg.Names.of(self._install, spec.conversation_id)
        self._starting.add(spec.conversation_id)
        try:
            return await self._start(spec, names, progress or _no_progress)
        except SandboxStartError as error:
            reason = await self._failure_reason(names, str(error))
            await asyncio.shield(self._remove_quietly(names))
            raise SandboxStartError(reason) from None
        except RuntimeUnavailable:
            await asyncio.shield(self._remove_quietly(names))
            raise
        except EngineError as error:
            await asyncio.shield(self._remove_quietly(names))
            raise SandboxStartError(f"the engine refused to start the sandbox: {error}") from None
        except BaseException:
            await asyncio.shield(self._remove_quietly(names))
            raise
        finally:
            self._starting.discard(spec.conversation_id)

    async def _start(self, spec: SandboxSpec, names: cfg.Names, progress: ProgressCallback) -> SandboxHandle:
        began = time.monotonic()
        labels = cfg.common_labels(spec, self._install)
        # Each create runs to its end even when the start is cancelled meanwhile (_whole): the
        # engine makes what a cancelled request asked for all the same, and start()'s clean-up
        # must come after it to find it (else it stays until orphan_age).
        await progress("creating volume")
        await _whole(self._engine.create_volume(names.volume, labels))
        if spec.seed is not None:
            await progress("copying the workspace")
            await self._seed_volume(names.volume, spec.seed)
        await progress("creating network")
        subnet = await _whole(self._create_network(names.network, labels, spec.internet))
        await progress("creating container")
        template = await self._templates.run_of(spec.template)
        sandbox = cfg.sandbox_config(
            self._policy,
            spec,
            cfg.sandbox_labels(spec, self._install, self._image_version),
            names,
            subnet,
            template,
        )
        relay = cfg.relay_config(
            self._policy, labels, subnet, self._front_network, publish=self.reach == "published", spec=spec
        )

        # The relay is made while the agent boots: the critical path is the sandbox's
        # own create + start + boot, as for a plain `docker run` (both containers
        # starting at once would slow the sandbox's start on a small machine).
        await _whole(
            _together(
                self._sandbox_made(names, sandbox, spec.token, owns_data=template is not None),
                self._relay_made(names, relay, subnet),
            )
        )
        await progress("starting container")
        await self._engine.start(names.sandbox)
        await self._engine.start(names.relay)
        base_url = await self._relay_url(names)
        await progress("waiting for agent")
        remaining = max(self._start_timeout - (time.monotonic() - began), 5.0)
        await wait_until_ready(base_url, within=remaining, interval=0.02, alive=self._alive_check(names))
        return SandboxHandle(spec=spec, base_url=base_url, state=SandboxState.RUNNING)

    async def _create_network(self, name: str, labels: dict[str, str], internet: bool) -> cfg.Subnet:
        # Docker's default address pools hold ~30 networks; ours come from a pool of
        # their own. The lock keeps this gateway's picks apart; the subnets in use are
        # cached, and read again from the engine when a create fails because another
        # gateway on the same engine took one meanwhile (or when the cache runs dry).
        async with self._subnet_lock:
            for attempt in range(8):
                if self._used_subnets is None or attempt > 0:
                    self._used_subnets = await self._subnets_in_use()
                subnet = next(cfg.free_subnets(self._subnet_pool, self._used_subnets), None)
                if subnet is None:
                    break
                try:
                    await self._engine.create_network(cfg.network_config(name, labels, subnet, internet))
                except EngineError as error:
                    if isinstance(error, EngineNotFound) or "overlap" not in str(error).lower():
                        raise
                    continue
                self._used_subnets.add(str(subnet.network))
                return subnet
        raise SandboxStartError(f"no free /29 left in docker_subnet_pool {self._subnet_pool}")

    async def _subnets_in_use(self) -> set[str]:
        return {
            ipam["Subnet"]
            for network in await self._engine.networks()
            for ipam in ((network.get("IPAM") or {}).get("Config") or [])
            if ipam.get("Subnet")
        }

    async def _sandbox_made(
        self, names: cfg.Names, config: dict[str, Any], token: str, owns_data: bool
    ) -> None:
        """Create the sandbox and put its token in its volume (never in its environment); with
        ``owns_data`` (a template's image, which has no /data to copy) the workspace and state too."""
        await self._engine.create_container(names.sandbox, config)
        archive = docker_token.token_archive(token, owner=self._policy.user if owns_data else None)
        await self._engine.put_archive(names.sandbox, docker_token.DATA_DIR, archive)

    async def _token(self, container: str) -> str | None:
        """The token in ``container``'s volume (read by the engine, whatever the file's owner)."""
        data = await self._quietly(self._engine.read_file(container, docker_token.TOKEN_FILE))
        token = data.decode(errors="replace").strip() if data else ""
        return token or None  # None: a sandbox of an older gateway, whose token is in its environment

    async def _relay_made(self, names: cfg.Names, config: dict[str, Any], subnet: cfg.Subnet) -> None:
        await self._engine.create_container(names.relay, config)
        await self._engine.connect_network(names.network, names.relay, subnet.relay_ip)

    async def _relay_url(self, names: cfg.Names) -> str:
        if self.reach == "network":
            return f"http://{names.relay}:{cfg.AGENT_PORT}"
        url = cfg.published_url(await self._engine.inspect(names.relay) or {})
        if url is None:
            raise SandboxStartError("the relay container has no published port")
        return url

    def _alive_check(self, names: cfg.Names) -> Callable[[], Awaitable[bool]]:
        """Whether the sandbox still runs, asking the engine at most every 0.25 s."""
        asked_at, running = 0.0, True

        async def alive() -> bool:
            nonlocal asked_at, running
            if time.monotonic() - asked_at >= 0.25:
                info = await self._engine.inspect(names.sandbox)
                asked_at, running = time.monotonic(), bool(info and (info.get("State") or {}).get("Running"))
            return running

        return alive

    async def _failure_reason(self, names: cfg.Names, error: str) -> str:
        try:
            info = await self._engine.inspect(names.sandbox)
            state = (info or {}).get("State") or {}
            if state and not state.get("Running") and state.get("Status") != "created":
                error = f"{error}: {cfg.exit_reason(state)}"
            tail = (await self._engine.logs(names.sandbox, _LOG_TAIL_LINES)).strip()
        except RuntimeFailure:
            tail = ""
        return f"{error}\nlast log lines:\n{tail}" if tail else error

    # --- find / list ------------------------------------------------------------------

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        filters = cfg.install_filter(self._install, **{cfg.CONVERSATION_ID: str(conversation_id)})
        handles = await self._handles(filters)
        return handles[0] if handles else None

    async def list(self) -> list[SandboxHandle]:
        summaries = await self._engine.containers(cfg.install_filter(self._install))
        self._listed = (time.monotonic(), summaries)
        return await self._handles_of(summaries)

    async def _handles(self, filters: dict[str, builtins.list[str]]) -> builtins.list[SandboxHandle]:
        return await self._handles_of(await self._engine.containers(filters))

    async def _handles_of(self, summaries: builtins.list[dict[str, Any]]) -> builtins.list[SandboxHandle]:
        groups = by_conversation(summaries)
        found = await asyncio.gather(
            *(
                self._handle(group)
                for conversation, group in groups.items()
                if cfg.SANDBOX in group and not self._removals.pending(conversation)
            )
        )
        return [handle for handle in found if handle is not None]

    async def _handle(self, group: dict[str, dict[str, Any]]) -> SandboxHandle | None:
        sandbox, relay = group[cfg.SANDBOX], group.get(cfg.RELAY)
        if sandbox.get("State") == "removing":
            return None  # on its way to absent (a removal by this or another gateway)
        names = cfg.Names.of(self._install, UUID(sandbox["Labels"][cfg.CONVERSATION_ID]))
        state = _STATES.get(sandbox.get("State", ""), SandboxState.EXITED)
        spec = self._specs.get(sandbox["Id"])
        info: dict[str, Any] | None = None
        if spec is None or state is SandboxState.EXITED:
            info = await self._engine.inspect(sandbox["Id"])
            token = spec.token if spec is not None else await self._token(sandbox["Id"])
            spec = cfg.spec_from_container(info, token) if info else None
            if spec is None:
                return None
            self._specs[sandbox["Id"]] = spec
        if spec.pool is not None:
            spec = await self._claimed_spec(sandbox["Id"], spec)
        base_url = (
            summary_url(relay) if self.reach == "published" else f"http://{names.relay}:{cfg.AGENT_PORT}"
        )
        if state is SandboxState.EXITED:
            status = (info or {}).get("State") or {}
            tail = await self._quietly(self._engine.logs(sandbox["Id"], _LOG_TAIL_LINES)) or ""
            reason = cfg.exit_reason(status) + (f"\nlast log lines:\n{tail.strip()}" if tail.strip() else "")
            return SandboxHandle(
                spec=spec,
                base_url=base_url or "",
                state=state,
                exit_code=status.get("ExitCode"),
                oom_killed=bool(status.get("OOMKilled")),
                reason=reason,
            )
        if self._relay_starting(sandbox, relay):
            return SandboxHandle(spec=spec, base_url=base_url or "", state=SandboxState.STARTING)
        relay_gone = relay is None or relay.get("State") != "running"
        if state in (SandboxState.RUNNING, SandboxState.PAUSED) and relay_gone:
            gone = "its relay container is gone"
            return SandboxHandle(spec=spec, base_url=base_url or "", state=SandboxState.EXITED, reason=gone)
        return SandboxHandle(spec=spec, base_url=base_url or "", state=state)

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

    async def _claimed_spec(self, container: str, spare: SandboxSpec) -> SandboxSpec:
        """The spec of a spare's container: the conversation's once claimed (here, by another
        gateway, or before a restart: the agent's claim file says), else the spare's."""
        known = self._claimed.get(spare.conversation_id)
        if known is not None:
            return known
        # An engine that does not answer fails the listing (which changes nothing) rather than
        # make a claimed sandbox look like a spare; a refusal (a container being removed) reads as
        # no claim: the pool adopts or removes only agents that answer as spares themselves.
        try:
            data = await self._engine.read_file(container, docker_token.CLAIM_FILE)
        except EngineError:
            data = None
        try:
            claim = Claim.model_validate_json(data) if data else None
        except ValueError:
            claim = None
        if claim is None or claim.conversation_id != spare.conversation_id:
            return spare
        spec = claimed_spec(spare, claim)
        self._claimed[spare.conversation_id] = spec
        return spec

    # --- remove / cleanup -------------------------------------------------------------

    async def remove(self, conversation_id: UUID) -> bool:
        """Returns once the sandbox can no longer run; the rest follows in the background
        (see :mod:`gateway.runtimes.docker_removal`)."""
        self._claimed.pop(conversation_id, None)
        return await self._removals.remove(conversation_id, cfg.Names.of(self._install, conversation_id))

    async def _remove_quietly(self, names: cfg.Names) -> None:
        await self._quietly(remove_all(self._engine, names, self._stop_grace))

    async def cleanup_orphans(self) -> int:
        """Remove conversations whose sandbox exited or lost its relay (call :meth:`list`
        first to learn why they ended), and volumes and networks of this installation
        that no container uses. Leaves alone what is being started."""
        removed = 0
        groups = by_conversation(await self._fresh_listing())
        for conversation, group in groups.items():
            if conversation in self._starting or self._removals.pending(conversation):
                continue
            sandbox, relay = group.get(cfg.SANDBOX), group.get(cfg.RELAY)
            if _under_way(group.values(), self.orphan_age):
                continue  # a start of another gateway of the installation, half-way
            healthy = (
                sandbox and relay and sandbox.get("State") in _LIVE_STATES and relay.get("State") == "running"
            )
            if not healthy:
                await remove_all(self._engine, cfg.Names.of(self._install, conversation), self._stop_grace)
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
        return removed + await self._templates.remove_dangling(self.orphan_age)

    async def _fresh_listing(self) -> builtins.list[dict[str, Any]]:
        """This installation's containers: those :meth:`list` just read (the reconcile lists,
        then cleans up: with hundreds of conversations each listing is megabytes of JSON
        decoded on the event loop), else read now. Starts under way here are in
        ``_starting``, those of other gateways young: neither is taken for an orphan."""
        listed_at, summaries = self._listed
        if time.monotonic() - listed_at < _LISTING_REUSE:
            return summaries
        return await self._engine.containers(cfg.install_filter(self._install))

    # --- templates (see gateway.runtimes.docker_templates) ----------------------------

    async def templates(self) -> builtins.list[Template]:
        return await self._templates.templates()

    async def build_template(
        self, name: str, source: TemplateSource, progress: ProgressCallback | None = None
    ) -> Template:
        return await self._templates.build(name, source, progress)

    async def remove_template(self, name: str) -> None:
        filters = cfg.install_filter(self._install, **{cfg.TEMPLATE: name, cfg.ROLE: cfg.SANDBOX})
        await self._templates.remove(name, in_use=len(await self._engine.containers(filters)))

    # --- usage (issue 14) -------------------------------------------------------------

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        """Engine stats, volume size and cgroup peak: see :mod:`gateway.runtimes.docker_usage`."""
        return await docker_usage.measure(self._engine, self._install, conversation_id, self._peaks)

    async def removals_done(self) -> None:
        """Return once the removals under way have ended (a DELETE answers before its
        relay, volume and network are gone: :mod:`gateway.runtimes.docker_removal`)."""
        await self._removals.close()

    async def close(self) -> None:
        await self._removals.close()
        await self._claimer.close()
        await self._engine.close()

    @staticmethod
    async def _quietly(call: Awaitable[_T]) -> _T | None:
        try:
            return await call
        except RuntimeFailure:
            return None


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
