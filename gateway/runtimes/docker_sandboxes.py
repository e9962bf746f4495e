"""The Docker runtime's lifecycle logic, over an :class:`Engine` (see :mod:`gateway.runtimes.docker`).

What one conversation owns, and how it is started, found, listed and removed,
is described in :mod:`gateway.runtimes.docker`; this module starts and removes
(:mod:`gateway.runtimes.docker_handles` finds, lists and cleans up; :mod:`gateway.runtimes.docker_relays`
makes the relay design's networks and relays), with every
engine call behind the small typed :class:`~gateway.runtimes.docker_engine.Engine`
protocol, whose errors are already mapped (so nothing here imports aiodocker).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from gateway.agent_transport import unix_url
from gateway.errors import EngineError, RuntimeFailure, RuntimeUnavailable, SandboxStartError
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
from gateway.runtimes.claiming import Claimer
from gateway.runtimes.docker_engine import Engine, quietly, together, whole
from gateway.runtimes.docker_handles import LISTING_REUSE, LOG_TAIL_LINES, DockerHandles, Reach
from gateway.runtimes.docker_relays import RelayNetworks
from gateway.runtimes.docker_removal import Removals, remove_all
from gateway.runtimes.docker_sockets import SocketDirs
from gateway.runtimes.docker_templates import DockerTemplates
from gateway.runtimes.usage_probes import PeakMemory
from gateway.settings import Settings

__all__ = ["DockerSandboxes", "Reach", "container_policy"]


async def _no_progress(phase: str) -> None:
    return None


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


class DockerSandboxes(DockerHandles):
    """The Runtime protocol on Docker (``DockerRuntime`` adds how to connect)."""

    name = "docker"
    enforces_egress = True  # by the relay container (see docker_config.relay_config)

    def __init__(self, settings: Settings, engine: Engine, *, image_version: str, reach: Reach) -> None:
        self._engine = engine
        self._install = settings.install
        self._start_timeout = settings.start_timeout
        self._stop_grace = settings.docker_stop_grace
        self._relayless = settings.docker_relayless
        socket_root = settings.docker_socket_dir or settings.state_dir / "sockets"
        self._sockets = SocketDirs(socket_root, self._install)
        self._removals = Removals(engine, settings.docker_stop_grace, self._sockets)
        self._listed: tuple[float, builtins.list[dict[str, Any]]] = (-LISTING_REUSE, [])
        self._policy = container_policy(settings)
        self._image_version = image_version
        self.reach: Reach = reach
        self._front_network = "bridge" if reach == "published" else settings.docker_network
        self._starting: set[UUID] = set()
        self._relays = RelayNetworks(engine, settings.docker_subnet_pool, reach)
        #: By container id, from its create here or its first listing: spares an inspect per list().
        self._specs: dict[str, SandboxSpec] = {}
        #: Claimed spares, by conversation id: their labels still say "spare" (labels are
        #: immutable); claims made elsewhere are learned from the agents (docker_claims).
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
        await whole(self._engine.create_volume(names.volume, labels))
        if spec.seed is not None:
            await progress("copying the workspace")
            await self._seed_volume(names.volume, spec.seed)
        networkless = self.networkless(spec)
        if networkless:
            base_url = await self._started_without_network(spec, names, progress)
        else:
            base_url = await self._started_with_relay(spec, names, labels, progress)
        await progress("waiting for agent")
        remaining = max(self._start_timeout - (time.monotonic() - began), 5.0)
        # A socket not made yet fails a try at once: it is tried as often as the bench polls
        # `docker run`'s floor (a relay's port, which takes the connection first, less often).
        interval = 0.01 if networkless else 0.02
        await wait_until_ready(base_url, within=remaining, interval=interval, alive=self._alive_check(names))
        if networkless:
            await self._sockets.seal(names)
        return SandboxHandle(spec=spec, base_url=base_url, state=SandboxState.RUNNING)

    def networkless(self, spec: SandboxSpec) -> bool:
        """Whether ``spec`` starts with no network and no relay (:mod:`gateway.runtimes.docker_sockets`)."""
        return self._relayless and not spec.internet and spec.egress is None

    async def _started_without_network(
        self, spec: SandboxSpec, names: cfg.Names, progress: ProgressCallback
    ) -> str:
        """Create and start a sandbox with no network; the agent's address (its socket). The
        default image's is handed its token in its socket directory (no engine call: see
        :mod:`gateway.runtimes.docker_sockets`), a template's through the engine."""
        template = await self._templates.run_of(spec.template)
        socket_dir = await self._sockets.make(names, token=spec.token if template is None else None)
        await progress("creating container")
        labels = cfg.sandbox_labels(spec, self._install, self._image_version)
        sandbox = cfg.sandbox_config(self._policy, spec, labels, names, None, template, socket_dir=socket_dir)
        own = template is not None  # a template's image: its token and /data through the engine
        await whole(self._sandbox_made(names, sandbox, spec, put_token=own, owns_data=own))
        await progress("starting container")
        await self._engine.start(names.sandbox)
        return unix_url(self._sockets.socket(names))

    async def _started_with_relay(
        self, spec: SandboxSpec, names: cfg.Names, labels: dict[str, str], progress: ProgressCallback
    ) -> str:
        """Create and start a sandbox on a network of its own and its relay; the relay's address."""
        await progress("creating network")
        subnet = await whole(self._relays.create_network(names.network, labels, spec.internet))
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
        await whole(
            together(
                self._sandbox_made(names, sandbox, spec, put_token=True, owns_data=template is not None),
                self._relays.relay_made(names, relay, subnet),
            )
        )
        await progress("starting container")
        await self._engine.start(names.sandbox)
        await self._engine.start(names.relay)
        return await self._relays.relay_url(names)

    async def _sandbox_made(
        self, names: cfg.Names, config: dict[str, Any], spec: SandboxSpec, *, put_token: bool, owns_data: bool
    ) -> None:
        """Create the sandbox of ``spec`` and, with ``put_token``, put its token in its volume
        (never in its environment; else it was handed over otherwise); with ``owns_data`` (a
        template's image, which has no /data to copy) the workspace and state too.

        Its spec is known from here as a listing would read it back from the engine (labels and
        environment are the config's): its first listing needs no inspect and no token read,
        tens of milliseconds each on a busy engine, paid by the create that claims a spare."""
        container = await self._engine.create_container(names.sandbox, config)
        known = cfg.spec_from_container({"Config": config}, spec.token)
        if known is not None:
            self._specs[container] = known
        if not put_token:
            return
        archive = docker_token.token_archive(spec.token, owner=self._policy.user if owns_data else None)
        await self._engine.put_archive(names.sandbox, docker_token.DATA_DIR, archive)

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
            tail = (await self._engine.logs(names.sandbox, LOG_TAIL_LINES)).strip()
        except RuntimeFailure:
            tail = ""
        return f"{error}\nlast log lines:\n{tail}" if tail else error

    # --- remove / cleanup -------------------------------------------------------------

    async def remove(self, conversation_id: UUID) -> bool:
        """Returns once the sandbox can no longer run; the rest follows in the background
        (see :mod:`gateway.runtimes.docker_removal`)."""
        self._claimed.pop(conversation_id, None)
        return await self._removals.remove(conversation_id, cfg.Names.of(self._install, conversation_id))

    async def _remove_quietly(self, names: cfg.Names) -> None:
        await quietly(remove_all(self._engine, names, self._stop_grace, self._sockets))

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

    async def forget_socket_dirs(self) -> int:
        """For an installation that is done (the doctor's, once all is removed): remove its socket
        directories; how many conversations' directories were still there."""
        return await self._sockets.forget()

    async def removals_done(self) -> None:
        """Return once the removals under way have ended (a DELETE answers before its
        relay, volume and network are gone: :mod:`gateway.runtimes.docker_removal`)."""
        await self._removals.close()

    async def close(self) -> None:
        await self._removals.close()
        await self._claimer.close()
        await self._engine.close()
