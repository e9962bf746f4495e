"""The relay design's own engine work (see :mod:`gateway.runtimes.docker`): a conversation's
network with a /29 of ``docker_subnet_pool``, its relay container on it, and the relay's
address for the gateway. A sandbox with no network (the default) needs none of it."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.errors import EngineError, EngineNotFound, SandboxStartError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_engine import Engine
from gateway.runtimes.docker_handles import Reach


class RelayNetworks:
    """Networks and relays of one gateway on ``engine``, with ``subnet_pool``'s addresses."""

    def __init__(self, engine: Engine, subnet_pool: str, reach: Reach) -> None:
        self._engine = engine
        self._subnet_pool = subnet_pool
        self._reach = reach
        self._lock = asyncio.Lock()
        self._used: set[str] | None = None

    async def create_network(self, name: str, labels: dict[str, str], internet: bool) -> cfg.Subnet:
        """Create network ``name`` on a free /29; :class:`SandboxStartError` when none is left."""
        # Docker's default address pools hold ~30 networks; ours come from a pool of
        # their own. The lock keeps this gateway's picks apart; the subnets in use are
        # cached, and read again from the engine when a create fails because another
        # gateway on the same engine took one meanwhile (or when the cache runs dry).
        async with self._lock:
            for attempt in range(8):
                if self._used is None or attempt > 0:
                    self._used = await self._subnets_in_use()
                subnet = next(cfg.free_subnets(self._subnet_pool, self._used), None)
                if subnet is None:
                    break
                try:
                    await self._engine.create_network(cfg.network_config(name, labels, subnet, internet))
                except EngineError as error:
                    if isinstance(error, EngineNotFound) or "overlap" not in str(error).lower():
                        raise
                    continue
                self._used.add(str(subnet.network))
                return subnet
        raise SandboxStartError(f"no free /29 left in docker_subnet_pool {self._subnet_pool}")

    async def _subnets_in_use(self) -> set[str]:
        return {
            ipam["Subnet"]
            for network in await self._engine.networks()
            for ipam in ((network.get("IPAM") or {}).get("Config") or [])
            if ipam.get("Subnet")
        }

    async def relay_made(self, names: cfg.Names, config: dict[str, Any], subnet: cfg.Subnet) -> None:
        """Create the relay and connect it to the conversation's network at its address."""
        await self._engine.create_container(names.relay, config)
        await self._engine.connect_network(names.network, names.relay, subnet.relay_ip)

    async def relay_url(self, names: cfg.Names) -> str:
        """Where the gateway reaches the (started) relay."""
        if self._reach == "network":
            return f"http://{names.relay}:{cfg.AGENT_PORT}"
        url = cfg.published_url(await self._engine.inspect(names.relay) or {})
        if url is None:
            raise SandboxStartError("the relay container has no published port")
        return url
