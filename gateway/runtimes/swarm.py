"""SwarmRuntime: one conversation = one Swarm service (and its relay's) on a cluster.

The engine is the one ``DOCKER_HOST`` (``docker_url``) names: a manager. What a
conversation owns (names ``cv-<install>-<id hex>``; everything labelled like the
Docker runtime's objects, and the labels on services are the registry, so any
gateway of the installation lists, adopts and serves every conversation):

- an **overlay network** of its own, ``internal`` unless ``internet``: only the
  sandbox and its relay are attached (no route to another sandbox);
- a **token config** (``-t``): the agent token, mounted in the sandbox at
  ``/run/convoy-agent/token`` owned by root, mode 0400 (the agent reads it as
  root, then drops to ``docker_user``, as on Docker: :mod:`gateway.runtimes.docker_token`).
  A config's data is returned by ``config inspect``, so any gateway reaching the
  manager recovers the token, and nothing else does (not in any environment);
- while it is paused, a **paused config** (``-p``): the PAUSED every gateway reads
  (:mod:`gateway.runtimes.swarm_lifecycle`, which also keeps its snapshots, as tar
  archives in ``swarm_snapshot_dir``, apart from every conversation);
- the **sandbox service**: one replica, restart condition ``none`` (a lost task is
  an error, never a silent restart with an empty workspace), the Docker runtime's
  labels, limits (``Resources.Limits``: memory, CPUs, pids; a reservation of
  ``swarm_reservation`` of the memory limit, so the scheduler spreads by it),
  hardening (read-only root, sized tmpfs ``/tmp``, init, all capabilities dropped
  but the agent's two; Docker 20.10's service API has no ``no-new-privileges``),
  placement constraints ``swarm_constraints``, ``dnsrr`` (no VIP). Its workspace
  and event log are on an **anonymous volume** at ``/data``: node-local, it stays
  with the task, and goes with the task's container when the service is removed
  (so nothing of it is left on any node, and no per-node clean-up is needed);
- the **relay service** (``-r``): placed on the sandbox's node once the scheduler
  has placed the sandbox (``node.id==``), on the conversation's network and on the
  installation's attachable overlay ``swarm_network``, forwarding to the
  sandbox's address there (read from its task: no DNS needed).

Reach (``swarm_reach``): ``network``: the relay's address on ``swarm_network``
(a gateway container attached to it: a stack); ``published``: the relay publishes
the agent port in ``host`` mode on its node (a port from ``swarm_ports``; Swarm
20.10 assigns none itself for host mode), reached at the node's address (a
gateway outside the cluster, as the tests on the host). ``auto``: ``network`` when
the gateway runs in a container of the swarm, else ``published``. Measured here:
the routing mesh and service VIPs do not work on these machines (no IPVS in the
kernel), host-mode ports and overlays across nodes do.

Pause/resume, snapshots and forks go through the sandbox's agent (the manager can
neither freeze a task nor reach another node's volume): :mod:`gateway.runtimes.swarm_lifecycle`.
Templates: the default only (a template's image would be needed on every
node: build it and load it on each, then use the docker runtime's images).
Egress allow-lists are not enforced (``enforces_egress`` False: the gateway
refuses them). Usage: the engine's stats where the task runs on the manager's own
node, nothing measured elsewhere (the manager cannot read another node's stats).
Images: ``service create`` with no image resolution; a node lacking the image
rejects the task, and the start fails naming the node and the image.
A lost node: :mod:`gateway.runtimes.swarm_state`.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from typing import TypeVar
from uuid import UUID

from gateway.errors import (
    ClaimFailed,
    EngineError,
    RuntimeFailure,
    RuntimeUnavailable,
    SandboxStartError,
)
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import docker_usage, swarm_state
from gateway.runtimes import swarm_config as scfg
from gateway.runtimes.base import (
    ProgressCallback,
    ResourceUsage,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    wait_until_ready,
)
from gateway.runtimes.claiming import Claimer, claim_of
from gateway.runtimes.docker import choose_reach
from gateway.runtimes.docker_engine import quietly
from gateway.runtimes.docker_sandboxes import container_policy
from gateway.runtimes.snapshot_archives import ArchiveStore
from gateway.runtimes.swarm_cleanup import SwarmCleanup
from gateway.runtimes.swarm_engine import SwarmEngine
from gateway.runtimes.swarm_lifecycle import SwarmLifecycle
from gateway.runtimes.swarm_placing import SwarmPlacing
from gateway.runtimes.swarm_sandboxes import HandleReader, read_world
from gateway.runtimes.template_catalog import DefaultTemplateOnly
from gateway.runtimes.usage_probes import PeakMemory
from gateway.settings import Settings

__all__ = ["SwarmRuntime"]
_T = TypeVar("_T")


async def _no_progress(phase: str) -> None:
    return None


class SwarmRuntime(SwarmLifecycle, SwarmPlacing, SwarmCleanup, DefaultTemplateOnly):
    """The Runtime protocol on a Docker Swarm; build it with :meth:`connect`."""

    name = "swarm"
    enforces_egress = False

    def __init__(
        self, settings: Settings, engine: SwarmEngine, *, image_version: str, reach: str, manager_node: str
    ) -> None:
        super().__init__("swarm", "the sandbox image, on every node")
        self._engine = engine
        self._install = settings.install
        self._start_timeout = settings.start_timeout
        self._policy = container_policy(settings)
        self._image_version = image_version
        self._constraints = list(settings.swarm_constraints)
        self._reserve = settings.swarm_reservation
        self._stop_grace = settings.docker_stop_grace
        low, _, high = settings.swarm_ports.partition("-")
        self._ports = range(int(low), int(high) + 1)
        self.reach = reach
        self._network = settings.swarm_network
        self._manager_node = manager_node
        self._starting: set[UUID] = set()
        self._reader = HandleReader(reach, settings.swarm_network)
        self._claimer = Claimer()
        self._peaks = PeakMemory()
        snapshot_dir = settings.swarm_snapshot_dir or settings.state_dir / "swarm-snapshots"
        self._archives = ArchiveStore(snapshot_dir / settings.install)
        #: Seconds a half-made conversation is given before cleanup_orphans() takes it for
        #: left behind (another gateway's start may be under way).
        self.orphan_age = 60.0

    @property
    def install(self) -> str:
        return self._install

    @property
    def engine(self) -> SwarmEngine:
        """The manager's API (the tests read what it holds)."""
        return self._engine

    @classmethod
    async def connect(cls, settings: Settings) -> SwarmRuntime:
        """Connect to the manager; :class:`RuntimeUnavailable` when none answers, it is no
        manager, or the sandbox image is not on it."""
        engine = await SwarmEngine.open(settings.docker_url)
        try:
            swarm = (await engine.info()).get("Swarm") or {}
            if not swarm.get("ControlAvailable"):
                raise RuntimeUnavailable("the swarm runtime needs a swarm manager (DOCKER_HOST names none)")
            image = await engine.image(settings.docker_image)
            if image is None:
                raise RuntimeUnavailable(f"image {settings.docker_image} missing on the manager")
            if not await engine.networks({"name": [settings.swarm_network]}):
                await engine.create_network(scfg.reach_network_config(settings.swarm_network))
            reach = await choose_reach(settings.swarm_reach, engine.local)
        except BaseException:
            await engine.close()
            raise
        labels = (image.get("Config") or {}).get("Labels") or {}
        return cls(
            settings,
            engine,
            image_version=labels.get(cfg.IMAGE_VERSION, "unknown"),
            reach=reach,
            manager_node=str(swarm.get("NodeID") or ""),
        )

    # --- start ------------------------------------------------------------------------

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        names = scfg.Names.of(self._install, spec.conversation_id)
        self._starting.add(spec.conversation_id)
        try:
            return await self._start(spec, names, progress or _no_progress)
        except SandboxStartError as error:
            reason = await self._failure_reason(spec.conversation_id, names, str(error))
            await asyncio.shield(quietly(self._remove(spec.conversation_id)))
            raise SandboxStartError(reason) from None
        except EngineError as error:
            await asyncio.shield(quietly(self._remove(spec.conversation_id)))
            raise SandboxStartError(f"the swarm refused to start the sandbox: {error}") from None
        except BaseException:
            await asyncio.shield(quietly(self._remove(spec.conversation_id)))
            raise
        finally:
            self._starting.discard(spec.conversation_id)

    async def _start(self, spec: SandboxSpec, names: scfg.Names, progress: ProgressCallback) -> SandboxHandle:
        began = time.monotonic()
        labels = cfg.common_labels(spec, self._install)
        await progress("creating network")
        await self._engine.create_network(scfg.network_config(names.network, labels, spec.internet))
        token_labels = scfg.claim_labels(self._install, spec.conversation_id, "token")
        token_id = await self._engine.create_config(names.token_config, spec.token.encode(), token_labels)
        await progress("creating service")
        await self._engine.create_service(
            scfg.sandbox_service(
                self._policy,
                spec,
                names,
                image_version=self._image_version,
                install=self._install,
                token_config_id=token_id,
                constraints=self._constraints,
                reserve=self._reserve,
                stop_grace=self._stop_grace,
            )
        )
        await progress("placing")
        node_id, address = await self._placed(names, began)
        port = await self._free_port() if self.reach == "published" else None
        await self._engine.create_service(
            scfg.relay_service(
                self._policy,
                labels,
                names,
                reach_network=self._network,
                target_ip=address,
                node_id=node_id,
                port=port,
            )
        )
        await progress("waiting for agent")
        base_url = await self._wait_url(spec.conversation_id, began)
        remaining = max(self._start_timeout - (time.monotonic() - began), 5.0)
        await wait_until_ready(
            base_url, within=remaining, interval=0.05, alive=self._alive(spec.conversation_id)
        )
        handle = SandboxHandle(spec=spec, base_url=base_url, state=SandboxState.RUNNING)
        if spec.seed is not None:
            await progress("filling workspace")
            await self._seed(handle, spec.seed)
        return handle

    # --- find / list ------------------------------------------------------------------

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        filters = cfg.install_filter(self._install, **{cfg.CONVERSATION_ID: str(conversation_id)})
        world = await read_world(self._engine, filters)
        return self._reader.handle(world, conversation_id, self._starting)

    async def list(self) -> builtins.list[SandboxHandle]:
        world = await read_world(self._engine, cfg.install_filter(self._install))
        return self._reader.handles(world, self._starting)

    # --- the pool ---------------------------------------------------------------------

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """The agent's claim, then a claim config beside the token (the manager cannot read
        the agent's claim file on another node): any gateway reads the claimed spec back."""
        handle = await self._claimer.claim(spare, spec)
        names = scfg.Names.of(self._install, spec.conversation_id)
        labels = scfg.claim_labels(self._install, spec.conversation_id, "claim")
        try:
            await self._engine.create_config(
                names.claim_config, claim_of(spec).model_dump_json().encode(), labels
            )
        except RuntimeFailure as error:
            raise ClaimFailed(f"the claim could not be recorded in the swarm: {error}") from None
        self._reader.claimed[spec.conversation_id] = handle.spec
        return handle

    # --- usage ------------------------------------------------------------------------

    async def usage(self, conversation_id: UUID) -> ResourceUsage | None:
        """The engine's stats when the task runs on the manager's node; else nothing measured."""
        handle = await self.find(conversation_id)
        if handle is None or handle.state is not SandboxState.RUNNING:
            return None
        tasks = await self._engine.tasks({"service": [scfg.Names.of(self._install, conversation_id).sandbox]})
        task = swarm_state.latest(tasks) or {}
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if task.get("NodeID") != self._manager_node or not container:
            return ResourceUsage()
        stats = await self._engine.local.stats(container)
        return self._peaks.update(conversation_id, docker_usage.usage_of(stats, None, None))

    async def close(self) -> None:
        await self._claimer.close()
        await self._close_lifecycle()
        await self._engine.close()
