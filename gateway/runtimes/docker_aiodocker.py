"""The Docker engine over aiodocker: :class:`AiodockerEngine` makes the
:class:`~gateway.runtimes.docker_engine.Engine` calls, and :func:`mapped_errors` maps every
aiodocker/aiohttp error once to the one of :mod:`gateway.errors` it means (the swarm
engine, :mod:`gateway.runtimes.swarm_engine`, maps its own calls through it too)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiodocker
import aiohttp
from aiodocker.networks import DockerNetwork
from aiodocker.volumes import DockerVolume

from gateway.errors import EngineError, EngineNotFound, RuntimeUnavailable

__all__ = ["AiodockerEngine", "mapped_errors"]


@contextlib.contextmanager
def mapped_errors(what: str) -> Iterator[None]:
    """Every aiodocker/aiohttp error of ``what`` as the one :mod:`gateway.errors` it means
    (the swarm engine maps its calls through this too)."""
    try:
        yield
    except aiodocker.DockerError as error:
        if error.status == 900:  # aiodocker's code for "cannot connect"
            raise RuntimeUnavailable(f"the Docker engine does not answer: {error.message}") from None
        if error.status == 404:
            raise EngineNotFound(f"{what}: {error.message}") from None
        raise EngineError(f"{what}: {error.message}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise RuntimeUnavailable(f"the Docker engine does not answer ({what}): {error!r}") from None


class AiodockerEngine:
    """The :class:`~gateway.runtimes.docker_engine.Engine` calls, over one aiodocker client."""

    def __init__(self, docker: aiodocker.Docker) -> None:
        self._docker = docker

    @classmethod
    async def open(cls, url: str | None) -> AiodockerEngine:
        """Connect and check the engine answers; :class:`RuntimeUnavailable` otherwise."""
        try:
            docker = aiodocker.Docker(url=url, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        except (ValueError, OSError) as error:
            raise RuntimeUnavailable(f"no Docker engine configured: {error}") from None
        engine = cls(docker)
        try:
            async with asyncio.timeout(15):
                await engine.version()
        except BaseException as error:
            await docker.close()
            if isinstance(error, TimeoutError):
                raise RuntimeUnavailable("the Docker engine did not answer within 15s") from None
            raise
        return engine

    async def version(self) -> dict[str, Any]:
        with mapped_errors("version"):
            return await self._docker.version()

    async def image(self, name: str) -> dict[str, Any] | None:
        try:
            with mapped_errors(f"image {name}"):
                return await self._docker.images.inspect(name)
        except EngineNotFound:
            return None

    async def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        # The engine's summaries as it sent them: aiodocker's containers.list() wraps each in an
        # object of its own, and a copy of each would be one more; with hundreds of sandboxes,
        # every sync's listing paid both on the event loop (and in garbage collections).
        with mapped_errors("list containers"):
            found = await self._docker._query_json(
                "containers/json", params={"all": "1", "filters": json.dumps(filters)}
            )
        return (
            [container for container in found if isinstance(container, dict)]
            if isinstance(found, list)
            else []
        )

    async def inspect(self, name: str) -> dict[str, Any] | None:
        try:
            with mapped_errors(f"container {name}"):
                return await self._docker.containers.container(name).show()
        except EngineNotFound:
            return None

    async def create_container(self, name: str, config: dict[str, Any]) -> str:
        """Create the container ``name``; its id."""
        with mapped_errors(f"create container {name}"):
            container = await self._docker.containers.create(config, name=name)
        return str(container.id)

    async def put_archive(self, name: str, path: str, archive: bytes) -> None:
        """Unpack the tar ``archive`` at ``path`` in the container (created or running)."""
        with mapped_errors(f"copy into {name}:{path}"):
            await self._docker.containers.container(name).put_archive(path, archive)  # type: ignore[no-untyped-call]

    async def read_file(self, name: str, path: str) -> bytes | None:
        """The regular file ``path`` in the container (as ``docker cp`` reads it), or ``None``."""
        try:
            with mapped_errors(f"copy from {name}:{path}"):
                tar = await self._docker.containers.container(name).get_archive(path)
        except EngineNotFound:
            return None
        with tar:
            member = next((item for item in tar.getmembers() if item.isfile()), None)
            extracted = tar.extractfile(member) if member else None
            return extracted.read() if extracted else None

    async def start(self, name: str) -> None:
        with mapped_errors(f"start container {name}"):
            await self._docker.containers.container(name).start()

    async def stop(self, name: str, grace: float) -> None:
        with mapped_errors(f"stop container {name}"):
            await self._docker.containers.container(name).stop(t=math.ceil(grace))

    async def remove_container(self, name: str) -> bool:
        try:
            with mapped_errors(f"remove container {name}"):
                await self._docker.containers.container(name).delete(force=True, v=True)
        except EngineNotFound:
            return False
        return True

    async def logs(self, name: str, tail: int) -> str:
        with mapped_errors(f"logs of {name}"):
            lines = await self._docker.containers.container(name).log(stdout=True, stderr=True, tail=tail)
        return "".join(lines)

    async def stats(self, name: str) -> dict[str, Any]:
        """One ``docker stats`` sample, at once: ``one-shot`` skips the engine's second
        sample (``precpu_stats`` stays empty), which would cost a second per call."""
        with mapped_errors(f"stats of {name}"):
            found = await self._docker._query_json(  # no public call takes one-shot
                f"containers/{name}/stats", params={"stream": "0", "one-shot": "1"}
            )
        return found if isinstance(found, dict) else {}

    async def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        with mapped_errors("list volumes"):
            found = await self._docker.volumes.list(filters=filters)  # type: ignore[no-untyped-call]
        return list(found.get("Volumes") or [])

    async def create_volume(self, name: str, labels: dict[str, str]) -> None:
        with mapped_errors(f"create volume {name}"):
            await self._docker.volumes.create({"Name": name, "Labels": labels})  # type: ignore[no-untyped-call]

    async def remove_volume(self, name: str) -> bool:
        try:
            with mapped_errors(f"remove volume {name}"):
                await DockerVolume(self._docker, name).delete()  # type: ignore[no-untyped-call]
        except EngineNotFound:
            return False
        return True

    async def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
        with mapped_errors("list networks"):
            return await self._docker.networks.list(filters=filters)

    async def create_network(self, config: dict[str, Any]) -> None:
        with mapped_errors(f"create network {config.get('Name')}"):
            await self._docker.networks.create(config)

    async def connect_network(self, network: str, container: str, ip: str) -> None:
        with mapped_errors(f"connect {container} to {network}"):
            await DockerNetwork(self._docker, network).connect(  # type: ignore[no-untyped-call]
                {"Container": container, "EndpointConfig": {"IPAMConfig": {"IPv4Address": ip}}}
            )

    async def remove_network(self, name: str) -> bool:
        try:
            with mapped_errors(f"remove network {name}"):
                await DockerNetwork(self._docker, name).delete()  # type: ignore[no-untyped-call]
        except EngineNotFound:
            return False
        return True

    async def close(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await self._docker.close()

    # --- lifecycle: the freezer and helper containers -----------------------------

    async def pause(self, name: str) -> None:
        with mapped_errors(f"pause container {name}"):
            await self._docker.containers.container(name).pause()

    async def unpause(self, name: str) -> None:
        with mapped_errors(f"unpause container {name}"):
            await self._docker.containers.container(name).unpause()

    async def wait(self, name: str) -> int:
        """Until the container ends; its exit code."""
        with mapped_errors(f"wait for container {name}"):
            result = await self._docker.containers.container(name).wait()
        return int(result.get("StatusCode", -1))

    # --- images, for templates -------------------------------------------------------

    async def images(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        with mapped_errors("list images"):
            return await self._docker.images.list(filters=filters)

    async def build_image(
        self, context: bytes, tag: str, labels: dict[str, str], dockerfile: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The engine's build (the classic builder: a ``FROM`` of a local image needs no
        registry), its progress items as they come (``{"stream": ...}``, ``{"error": ...}``)."""
        with mapped_errors(f"build {tag}"):
            stream = self._docker.images.build(
                fileobj=io.BytesIO(context),
                encoding="application/x-tar",
                path_dockerfile=dockerfile,
                tag=tag,
                labels=labels,
                rm=True,
                forcerm=True,
                stream=True,
            )
            async for item in stream:
                yield item

    async def pull_image(self, reference: str) -> None:
        with mapped_errors(f"pull {reference}"):
            await self._docker.images.pull(reference)

    async def remove_image(self, name: str) -> bool:
        try:
            with mapped_errors(f"remove image {name}"):
                await self._docker.images.delete(name)
        except EngineNotFound:
            return False
        return True
