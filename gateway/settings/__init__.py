"""Gateway settings: every knob, from the environment with the prefix ``CONVOY_``
(``CONVOY_PORT``, ``CONVOY_DOCKER_MEMORY``, ...).

One flat :class:`Settings` (``settings.docker_memory``), its fields grouped by concern in the
modules of this package: :mod:`~gateway.settings.serving` (listening, keys, the server's own
protection, logs, console), :mod:`~gateway.settings.lifecycle` (limits, timers, pause,
snapshots, the pool, templates), :mod:`~gateway.settings.proxying` (HTTP, WebSockets,
previews), :mod:`~gateway.settings.runtimes` (process, Docker) and
:mod:`~gateway.settings.clusters` (Kubernetes, swarm). A field's name is its variable's
(``CONVOY_`` + the name, any case); its default and bounds are declared once, there.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.settings.clusters import ClusterRuntimeSettings
from gateway.settings.lifecycle import LifecycleSettings
from gateway.settings.proxying import ProxyingSettings
from gateway.settings.runtimes import DockerReach, HostRuntimeSettings
from gateway.settings.serving import RuntimeName, ServingSettings

__all__ = ["DockerReach", "RuntimeName", "Settings"]


# pydantic orders the fields from the last base to the first: the groups are listed last-first.
class Settings(
    ClusterRuntimeSettings,
    HostRuntimeSettings,
    ProxyingSettings,
    LifecycleSettings,
    ServingSettings,
    BaseSettings,
):
    """Every setting of one gateway, read once from the environment at start-up."""

    model_config = SettingsConfigDict(env_prefix="CONVOY_", extra="ignore")
