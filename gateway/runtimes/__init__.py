"""Choosing the runtime: ``settings.runtime`` is ``process``, ``docker``, ``swarm`` (a Docker
Swarm whose manager ``DOCKER_HOST`` names), ``kubernetes``, ``memory``
(agents inside the gateway's process, for tests) or ``auto`` (Docker when an
engine answers, else the local process runtime).

The Docker and Kubernetes runtimes are imported lazily so that nothing outside
them (``docker_aiodocker.py``, ``swarm_engine.py``) imports aiodocker (nor outside
``gateway/runtimes/kubernetes_api.py`` lightkube), and a machine without them
still runs the process runtime.
"""

from __future__ import annotations

import logging

from gateway.runtimes.base import Runtime, RuntimeUnavailable
from gateway.settings import Settings

__all__ = ["Runtime", "RuntimeUnavailable", "create_runtime"]

log = logging.getLogger("convoy.gateway")


async def _docker(settings: Settings) -> Runtime:
    from gateway.runtimes.docker import DockerRuntime

    runtime: Runtime = await DockerRuntime.connect(settings)
    return runtime


async def create_runtime(settings: Settings) -> Runtime:
    """The runtime ``settings`` ask for. Raises :class:`RuntimeUnavailable` when
    ``docker`` or ``kubernetes`` is asked for explicitly and its API does not answer."""
    if settings.runtime == "docker":
        return await _docker(settings)
    if settings.runtime == "kubernetes":
        from gateway.runtimes.kubernetes import KubernetesRuntime

        return await KubernetesRuntime.connect(settings)
    if settings.runtime == "swarm":
        from gateway.runtimes.swarm import SwarmRuntime

        return await SwarmRuntime.connect(settings)
    if settings.runtime == "memory":
        from gateway.runtimes.memory import MemoryRuntime

        return MemoryRuntime(settings)
    if settings.runtime == "auto":
        try:
            return await _docker(settings)
        except (RuntimeUnavailable, ImportError) as error:
            log.info("no Docker runtime (%s): using the process runtime", error)
    from gateway.runtimes.process import ProcessRuntime

    return ProcessRuntime(settings)
