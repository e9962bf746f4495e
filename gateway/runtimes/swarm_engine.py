"""The Swarm manager's API calls the swarm runtime makes, over one aiodocker client.

aiodocker 0.27 has no typed calls for services, tasks, nodes or configs, so they go
through its raw ``_query_json``; every error is mapped once, here, by
:func:`gateway.runtimes.docker_aiodocker.mapped_errors` (the Docker runtime's mapping) to
:mod:`gateway.errors`. The manager's own containers and networks are the Docker
runtime's :class:`~gateway.runtimes.docker_aiodocker.AiodockerEngine` calls (``local``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import aiodocker

from gateway.errors import EngineNotFound
from gateway.runtimes.docker_aiodocker import AiodockerEngine, mapped_errors

__all__ = ["SwarmEngine"]


def _filters(filters: dict[str, list[str]]) -> dict[str, str]:
    return {"filters": json.dumps(filters)}


class SwarmEngine:
    """Services, tasks, nodes, configs and networks of the swarm (the manager answers for all)."""

    def __init__(self, local: AiodockerEngine, docker: aiodocker.Docker) -> None:
        self.local = local
        self._docker = docker

    @classmethod
    async def open(cls, url: str | None) -> SwarmEngine:
        """Connect to the manager ``url`` names (else DOCKER_HOST); :class:`RuntimeUnavailable` otherwise."""
        local = await AiodockerEngine.open(url)
        return cls(local, local._docker)

    async def _query(self, what: str, path: str, method: str = "GET", **kwargs: Any) -> Any:
        with mapped_errors(what):
            return await self._docker._query_json(path, method, **kwargs)

    async def info(self) -> dict[str, Any]:
        found = await self._query("info", "info")
        return found if isinstance(found, dict) else {}

    # --- services -----------------------------------------------------------------------

    async def services(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        found = await self._query("list services", "services", params=_filters(filters))
        return list(found or [])

    async def create_service(self, spec: dict[str, Any]) -> str:
        """Create a service (no image resolution: with no registry there is nothing to ask); its id."""
        name = spec.get("Name", "")
        created = await self._query(f"create service {name}", "services/create", "POST", data=spec)
        return str(created["ID"])

    async def remove_service(self, name: str) -> bool:
        try:
            await self._query(f"remove service {name}", f"services/{name}", "DELETE")
        except EngineNotFound:
            return False
        return True

    async def service_logs(self, name: str, tail: int) -> str:
        """The last lines the service's task wrote (the manager asks its node: fails when it is down)."""
        params = {"stdout": "1", "stderr": "1", "tail": str(tail)}
        with mapped_errors(f"logs of {name}"):
            async with self._docker._query(f"services/{name}/logs", params=params) as response:
                raw = await response.read()
        return _demultiplexed(raw)

    # --- tasks and nodes ------------------------------------------------------------------

    async def tasks(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        found = await self._query("list tasks", "tasks", params=_filters(filters))
        return list(found or [])

    async def nodes(self) -> list[dict[str, Any]]:
        return list(await self._query("list nodes", "nodes") or [])

    # --- configs: small, labelled, readable back by whoever reaches the manager ------------

    async def configs(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return list(await self._query("list configs", "configs", params=_filters(filters)) or [])

    async def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> str:
        body = {"Name": name, "Labels": labels, "Data": base64.b64encode(data).decode()}
        created = await self._query(f"create config {name}", "configs/create", "POST", data=body)
        return str(created["ID"])

    async def config_data(self, name: str) -> bytes | None:
        """The data of config ``name``, or ``None`` when there is none."""
        try:
            found = await self._query(f"config {name}", f"configs/{name}")
        except EngineNotFound:
            return None
        return base64.b64decode((found.get("Spec") or {}).get("Data") or "")

    async def remove_config(self, name: str) -> bool:
        try:
            await self._query(f"remove config {name}", f"configs/{name}", "DELETE")
        except EngineNotFound:
            return False
        return True

    # --- networks (swarm-scoped overlays: the manager's network calls) ----------------------

    async def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        return await self.local.networks(filters)

    async def create_network(self, config: dict[str, Any]) -> None:
        await self.local.create_network(config)

    async def remove_network(self, name: str) -> bool:
        return await self.local.remove_network(name)

    async def image(self, name: str) -> dict[str, Any] | None:
        return await self.local.image(name)

    async def close(self) -> None:
        await self.local.close()


def _demultiplexed(raw: bytes) -> str:
    """The text of a log stream in Docker's multiplexed frames (8-byte headers), or as is."""
    out, rest = [], raw
    while len(rest) >= 8 and rest[0] in (0, 1, 2) and rest[1:4] == b"\0\0\0":
        size = int.from_bytes(rest[4:8], "big")
        out.append(rest[8 : 8 + size])
        rest = rest[8 + size :]
    if rest:
        out.append(rest)
    return b"".join(out).decode(errors="replace")
