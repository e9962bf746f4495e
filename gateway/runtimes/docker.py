"""DockerRuntime: one hardened container per conversation. The only module that imports aiodocker.

What a conversation owns (names ``convoy-<install>-<conversation id>``, all
labelled ``convoy.install``, ``convoy.conversation-id``, ``convoy.owner``,
``convoy.created-at``, ``convoy.title``; the labels are the registry, the
gateway keeps no database):

- a **volume** mounted at ``/data``: ``/data/workspace`` and ``/data/state``
  (the agent's event log), so a restarted sandbox keeps both;
- with neither internet nor an egress list (the default, pool spares included; setting
  ``docker_relayless``): **no network at all** (``NetworkMode: none``, only loopback: no
  route to the host, the internet or another sandbox) and no relay; its agent listens on
  a Unix socket in a host directory of its own, mounted into it alone, which the gateway
  connects to (:mod:`gateway.runtimes.docker_sockets`; the handle's ``base_url`` is
  ``http+unix://...``, see :mod:`gateway.agent_transport`). Otherwise:
- a **network** of its own: a bridge with a /29 from ``docker_subnet_pool``.
  By default it is ``internal`` (no route out) *and* the host has no address
  on it (``com.docker.network.bridge.inhibit_ipv4``), so the sandbox cannot
  open a connection to the internet, to the host (not even to the bridge
  address Docker normally gives the host on every network, where every host
  service bound to 0.0.0.0 answers) or to another sandbox;
- the **sandbox** container: the agent, started from its self-contained bundle in
  ``/opt/convoy`` (:mod:`gateway.runtimes.docker_bundle`; in a template's image, the
  bundle is mounted read-only: :mod:`gateway.runtimes.docker_templates`), whose tasks run as user 10001
  with no capability (the agent keeps CAP_SETUID/CAP_SETGID only), all others
  dropped, no-new-privileges, read-only root with a sized tmpfs ``/tmp``, an
  init process, memory/CPU/pids limits, bounded logs, no Docker socket (each a
  setting). Its labels also carry the image version, idle timeout, internet
  flag, limits and the names of its extra env variables; the agent token is in
  a root-only file of its volume, read back through the engine after a gateway
  restart or by another gateway of the installation (the agent
  reads it as root, then drops to the sandbox user: see
  :mod:`gateway.runtimes.docker_token`);
- the **relay** container (``images/sandbox/relay.py``, same image, same
  hardening): the only other member of that network, and the gateway's way in.
  It forwards TCP to the agent (its own connections only: its namespace routes
  nothing between its two networks, ``docker_config.RELAY_SYSCTLS``), and sits on the gateway's side: a port
  published on 127.0.0.1 (``docker_reach=published``: a gateway on the host,
  Linux or Docker Desktop alike) or ``docker_network`` by name
  (``network``: a gateway in a container; ``auto`` picks ``network`` when
  the gateway runs in a container of the same engine).

Spares (the pool): a spec with ``pool`` set makes a sandbox labelled
``convoy.pool`` whose agent starts ``--spare`` (its token file holds the claim
secret). Labels cannot change, so after the claim a spare's labels still say
"spare": its agent keeps the claim in ``/data/agent/claim.json`` (root's, like
the token: see :mod:`gateway.runtimes.docker_token`), and the runtime reads it
back (after a restart, or a claim by another gateway) for the claimed spec.

Why a relay (where the sandbox has a network): Docker 20.10 does not publish ports of containers on internal
networks, and any network where the host has an address lets a container reach
the host's services (Docker filters forwarded traffic, never the host's own
input). A gateway reaching container addresses directly would also fail on
Docker Desktop. The relay costs one small container (~10 MB) per conversation,
created and started alongside the sandbox.

With an egress allow-list (``SandboxSpec.egress``) the network stays internal;
the relay also runs the enforcer (``images/sandbox/egress.py``: an HTTP(S)
proxy and the sandbox's only DNS server, for the allowed names and networks
only) and the sandbox gets ``HTTP_PROXY``/``HTTPS_PROXY`` and the relay as its
DNS server (see :mod:`gateway.runtimes.docker_egress`); the list is a label.

Trade-off of ``internet=True``: the conversation's network is then a plain NAT
bridge; the sandbox can open outbound connections, and, as on any Docker
bridge, also reach the host's address on that bridge. Other sandboxes stay out
of reach (separate bridges). Firewall the host (DOCKER-USER does not cover
input) where that matters.

Start-up phases reported: "creating volume", "creating network" (not without a
network), "creating container", "starting container", "waiting for agent". Every aiodocker/aiohttp
error is mapped here, once, to :mod:`gateway.errors` (``EngineError``,
``EngineNotFound``, ``RuntimeUnavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.networks import DockerNetwork
from aiodocker.volumes import DockerVolume

from gateway.errors import EngineError, EngineNotFound, RuntimeUnavailable
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_sandboxes import DockerSandboxes, Reach
from gateway.settings import DockerReach, Settings

__all__ = ["AiodockerEngine", "DockerRuntime", "choose_reach", "mapped_errors"]


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


class DockerRuntime(DockerSandboxes):
    """The Runtime protocol on a Docker engine; build it with :meth:`connect`."""

    engine: AiodockerEngine

    @classmethod
    async def connect(cls, settings: Settings) -> DockerRuntime:
        """Connect to the engine (``settings.docker_url``, else DOCKER_HOST or the local
        socket). Raises :class:`RuntimeUnavailable` when no engine answers or the
        sandbox image is missing (``scripts/build-images`` builds it)."""
        engine = await AiodockerEngine.open(settings.docker_url)
        try:
            image = await engine.image(settings.docker_image)
            if image is None:
                raise RuntimeUnavailable(f"image {settings.docker_image} missing: run scripts/build-images")
            labels = (image.get("Config") or {}).get("Labels") or {}
            reach = await choose_reach(settings.docker_reach, engine)
            shared = await engine.networks({"name": [settings.docker_network]})
            if reach == "network" and not any(net.get("Name") == settings.docker_network for net in shared):
                await engine.create_network(
                    {"Name": settings.docker_network, "Driver": "bridge", "Labels": {"convoy.shared": "true"}}
                )
        except BaseException:
            await engine.close()
            raise
        runtime = cls(settings, engine, image_version=labels.get(cfg.IMAGE_VERSION, "unknown"), reach=reach)
        runtime.engine = engine
        return runtime


async def choose_reach(wanted: DockerReach, engine: AiodockerEngine) -> Reach:
    """``wanted``, or for ``auto``: ``network`` when this process runs in a container of the
    same engine (``/.dockerenv`` alone is not proof: some VM images carry it), else ``published``."""
    if wanted != "auto":
        return wanted
    if not await asyncio.to_thread(Path("/.dockerenv").exists):
        return "published"
    ours = await engine.inspect(socket.gethostname())
    return "network" if ours and (ours.get("State") or {}).get("Running") else "published"
