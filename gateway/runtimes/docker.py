"""DockerRuntime: one hardened container per conversation (aiodocker is imported by
:mod:`gateway.runtimes.docker_aiodocker` alone).

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
error is mapped once, in :mod:`gateway.runtimes.docker_aiodocker`, to :mod:`gateway.errors`
(``EngineError``, ``EngineNotFound``, ``RuntimeUnavailable``).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.errors import RuntimeUnavailable
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_aiodocker import AiodockerEngine, mapped_errors
from gateway.runtimes.docker_sandboxes import DockerSandboxes, Reach
from gateway.settings import DockerReach, Settings

__all__ = ["AiodockerEngine", "DockerRuntime", "choose_reach", "mapped_errors"]


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
