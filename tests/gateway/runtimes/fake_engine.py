"""FakeEngine: the Docker runtime's :class:`~gateway.runtimes.docker_engine.Engine`, in memory.

It keeps containers, volumes and networks as the engine would report them
(summaries, ``inspect`` output, label and name filters: engine_objects.py) and
refuses what Docker refuses: a name taken twice, a subnet that overlaps another
network's, a volume or network still in use by a container. Tests steer it:

- ``ready_port``: the host port every relay publishes (point it at a server
  answering ``/ready``, or at nothing);
- :meth:`fail_next`: the next call of an engine method (on a name containing a
  fragment) raises the given error;
- :meth:`steal_subnets`: the next network creations find their subnet just taken
  by another gateway on the same engine (a network of its own appears there);
- :meth:`exit`: a container ends (exit code, OOM, log lines);
  ``crash_on_start``: sandboxes end as soon as they start;
- :meth:`age`: an object was created that many seconds ago;
- ``down``: the engine does not answer (every call raises ``RuntimeUnavailable``);
- helper containers (``convoy.role=helper``) end as soon as they start, with
  ``helper_exit`` (exit code, output): nothing is copied in memory.
- ``create_pause``: seconds each container create takes; as with Docker, a create whose
  caller is cancelled meanwhile completes all the same (:meth:`settled` waits for those);
- ``removal_pause``: seconds each stop and removal takes (the engine is busy), with
  ``timeline`` recording when each began and ended, so a test sees what overlapped.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import EngineError, EngineNotFound, RuntimeUnavailable
from gateway.runtimes import docker_config as cfg
from tests.gateway.runtimes.engine_objects import FakeContainer, FakeNetwork, matches, volume_summary


class FakeEngine:
    """An :class:`~gateway.runtimes.docker_engine.Engine` in memory (see the module docstring)."""

    def __init__(self, ready_port: int = 9) -> None:
        self.ready_port = ready_port
        self.down = False
        self.crash_on_start: tuple[int, str] | None = None
        self.containers_by_name: dict[str, FakeContainer] = {}
        self.volumes_by_name: dict[str, dict[str, Any]] = {}
        self.networks_by_name: dict[str, FakeNetwork] = {}
        self.calls: list[tuple[str, str]] = []
        self.closed = False
        self.removal_pause = 0.0
        self.create_pause = 0.0
        self._creating: set[asyncio.Future[str]] = set()
        #: ("begin" | "end", method, name) of stops and removals, in the order they happened.
        self.timeline: list[tuple[str, str, str]] = []
        self._failures: list[tuple[str, str, Exception]] = []
        self._steal = 0
        self._foreign = itertools.count(1)
        self.helper_exit: tuple[int, str] = (0, "4096\n")

    # --- steering -----------------------------------------------------------------

    def fail_next(self, method: str, error: Exception, name: str = "") -> None:
        self._failures.append((method, name, error))

    def steal_subnets(self, count: int) -> None:
        self._steal += count

    def exit(self, name: str, code: int, *, oom: bool = False, logs: str = "") -> None:
        self._container(name).end(code, oom, logs)

    def age(self, name: str, seconds: float) -> None:
        """Make the container, volume or network ``name`` ``seconds`` older."""
        if name in self.containers_by_name:
            self.containers_by_name[name].created -= seconds
        if name in self.networks_by_name:
            self.networks_by_name[name].created -= seconds
        if name in self.volumes_by_name:
            self.volumes_by_name[name]["created"] -= seconds

    def names(self, fragment: str = "") -> set[str]:
        """Every object's name (containers, volumes, networks) containing ``fragment``."""
        every = [*self.containers_by_name, *self.volumes_by_name, *self.networks_by_name]
        return {name for name in every if fragment in name}

    def _call(self, method: str, name: str = "") -> None:
        self.calls.append((method, name))
        if self.down:
            raise RuntimeUnavailable(f"the Docker engine does not answer ({method})")
        for index, (wanted, fragment, error) in enumerate(self._failures):
            if wanted == method and fragment in name:
                del self._failures[index]
                raise error

    async def _busy(self, method: str, name: str) -> None:
        """Takes ``removal_pause`` seconds, noted in ``timeline``."""
        self.timeline.append(("begin", method, name))
        await asyncio.sleep(self.removal_pause)
        self.timeline.append(("end", method, name))

    def _container(self, name: str) -> FakeContainer:
        for container in self.containers_by_name.values():
            if name in (container.name, container.id):
                return container
        raise EngineNotFound(f"No such container: {name}")

    # --- containers ---------------------------------------------------------------

    async def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        self._call("containers")
        return [c.summary() for c in self.containers_by_name.values() if matches(c.labels, c.name, filters)]

    async def inspect(self, name: str) -> dict[str, Any] | None:
        self._call("inspect", name)
        try:
            return self._container(name).inspected()
        except EngineNotFound:
            return None

    async def create_container(self, name: str, config: dict[str, Any]) -> str:
        self._call("create_container", name)
        if not self.create_pause:
            return self._create_container(name, config)
        # The engine's side of it: not cancelled with the request.
        work = asyncio.ensure_future(self._create_later(name, config))
        self._creating.add(work)
        work.add_done_callback(self._creating.discard)
        return await asyncio.shield(work)

    async def _create_later(self, name: str, config: dict[str, Any]) -> str:
        await asyncio.sleep(self.create_pause)
        return self._create_container(name, config)

    async def settled(self) -> None:
        """Waits for the creates under way (whoever is still waiting for them)."""
        await asyncio.gather(*self._creating, return_exceptions=True)

    def _create_container(self, name: str, config: dict[str, Any]) -> str:
        if name in self.containers_by_name:
            raise EngineError(f'Conflict. The container name "/{name}" is already in use')
        host = config.get("HostConfig") or {}
        for mount in host.get("Mounts") or []:
            if mount["Source"] not in self.volumes_by_name:  # Docker would create it; ours never do
                raise EngineError(f"volume {mount['Source']} missing")
        container = FakeContainer(name, config)
        mode = host.get("NetworkMode")
        if mode and mode not in ("bridge", "none"):
            if mode not in self.networks_by_name:
                raise EngineError(f"network {mode} not found")
            container.networks.add(mode)
        self.containers_by_name[name] = container
        return container.id

    async def start(self, name: str) -> None:
        self._call("start", name)
        container = self._container(name)
        container.status = "running"
        if (container.config.get("HostConfig") or {}).get("PortBindings"):
            container.host_port = self.ready_port
        if container.labels.get(cfg.ROLE) == "helper":
            code, output = self.helper_exit
            self.exit(name, code, logs=output)
        if self.crash_on_start and container.labels.get(cfg.ROLE) == cfg.SANDBOX:
            code, logs = self.crash_on_start
            self.exit(name, code, logs=logs)

    async def stop(self, name: str, grace: float) -> None:
        self._call("stop", name)
        await self._busy("stop", name)
        self._container(name).transition("running", "exited")

    async def pause(self, name: str) -> None:
        self._call("pause", name)
        if not self._container(name).transition("running", "paused"):
            raise EngineError(f"Container {name} is not running")

    async def unpause(self, name: str) -> None:
        self._call("unpause", name)
        if not self._container(name).transition("paused", "running"):
            raise EngineError(f"Container {name} is not paused")

    async def wait(self, name: str) -> int:
        self._call("wait", name)
        return self._container(name).exit_code

    async def remove_container(self, name: str) -> bool:
        self._call("remove_container", name)
        await self._busy("remove_container", name)
        try:
            container = self._container(name)
        except EngineNotFound:
            return False
        del self.containers_by_name[container.name]
        return True

    async def put_archive(self, name: str, path: str, archive: bytes) -> None:
        self._call("put_archive", name)
        self._container(name).extract(path, archive)

    async def read_file(self, name: str, path: str) -> bytes | None:
        self._call("read_file", name)
        return self._container(name).files.get(path)

    async def stats(self, name: str) -> dict[str, Any]:
        self._call("stats", name)
        return dict(self._container(name).stats)

    async def logs(self, name: str, tail: int) -> str:
        self._call("logs", name)
        return "\n".join(self._container(name).logs.splitlines()[-tail:])

    # --- volumes ------------------------------------------------------------------

    async def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        self._call("volumes")
        return [
            volume_summary(name, volume)
            for name, volume in self.volumes_by_name.items()
            if matches(volume["labels"], name, filters)
        ]

    async def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self._call("create_volume", name)
        self.volumes_by_name.setdefault(name, {"labels": dict(labels), "created": time.time()})

    async def remove_volume(self, name: str) -> bool:
        self._call("remove_volume", name)
        await self._busy("remove_volume", name)
        if name not in self.volumes_by_name:
            return False
        for container in self.containers_by_name.values():
            if container.mounts(name):
                raise EngineError(f"remove {name}: volume is in use - [{container.id}]")
        del self.volumes_by_name[name]
        return True

    # --- networks -----------------------------------------------------------------

    async def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        self._call("networks")
        return [
            network.summary(name)
            for name, network in self.networks_by_name.items()
            if matches(network.labels, name, filters)
        ]

    async def create_network(self, config: dict[str, Any]) -> None:
        name = str(config["Name"])
        self._call("create_network", name)
        if name in self.networks_by_name:
            raise EngineError(f"network with name {name} already exists")
        wanted = FakeNetwork(config)
        if self._steal and wanted.subnets:
            self._steal -= 1
            thief = f"other-gateway-{next(self._foreign)}"
            self.networks_by_name[thief] = FakeNetwork(config | {"Name": thief, "Labels": {}}, foreign=True)
        if any(wanted.overlaps(other) for other in self.networks_by_name.values()):
            raise EngineError("Pool overlaps with other one on this address space")
        self.networks_by_name[name] = wanted

    async def connect_network(self, network: str, container: str, ip: str) -> None:
        self._call("connect_network", container)
        if network not in self.networks_by_name:
            raise EngineNotFound(f"network {network} not found")
        self._container(container).networks.add(network)

    async def remove_network(self, name: str) -> bool:
        self._call("remove_network", name)
        await self._busy("remove_network", name)
        if name not in self.networks_by_name:
            return False
        users = [c.name for c in self.containers_by_name.values() if name in c.networks]
        if users:
            raise EngineError(f"error while removing network: network {name} has active endpoints {users}")
        del self.networks_by_name[name]
        return True

    async def close(self) -> None:
        self.closed = True

    # --- images (templates): this fake holds none ------------------------------------

    async def image(self, name: str) -> dict[str, Any] | None:
        return None

    async def images(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return []

    async def build_image(
        self, context: bytes, tag: str, labels: dict[str, str], dockerfile: str
    ) -> AsyncIterator[dict[str, Any]]:
        raise EngineError("the fake engine builds no image")
        yield {}

    async def pull_image(self, reference: str) -> None:
        raise EngineError(f"the fake engine pulls nothing ({reference})")

    async def remove_image(self, name: str) -> bool:
        return False
