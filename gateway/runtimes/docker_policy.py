"""What every container of the installation gets, whatever the conversation: the policy.

:class:`ContainerPolicy` is what the ``docker_*`` settings say (image, user, default
limits, hardening); :func:`effective_limits` fills a spec's unset limits from its
defaults; :func:`hardening` is the host configuration every container starts from.
Plain data, no engine calls: the containers built on it are
:mod:`gateway.runtimes.docker_config`'s (which re-exports this).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.runtimes.base import ResourceLimits

_LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}}


@dataclass(frozen=True)
class ContainerPolicy:
    """What every container of the installation gets (the ``docker_*`` settings)."""

    image: str
    user: str
    #: Limits of a sandbox whose spec sets none (and the relay's CPU share).
    default_limits: ResourceLimits
    read_only: bool = True
    tmpfs_bytes: int = 64 * 1024 * 1024
    init: bool = True
    drop_capabilities: bool = True
    no_new_privileges: bool = True
    #: Where the egress enforcer resolves allowed names (``host:port``; empty: the relay's own resolver).
    egress_resolver: str = ""


def effective_limits(defaults: ResourceLimits, requested: ResourceLimits) -> ResourceLimits:
    """``requested``, with ``defaults`` for what it leaves unset."""
    return ResourceLimits(
        memory_bytes=requested.memory_bytes or defaults.memory_bytes,
        cpus=requested.cpus or defaults.cpus,
        pids=requested.pids or defaults.pids,
    )


def hardening(policy: ContainerPolicy) -> dict[str, Any]:
    """The host configuration every container of the installation gets: a read-only root (by
    default), bounded logs, no capabilities, no new privileges (as the policy says)."""
    host: dict[str, Any] = {"ReadonlyRootfs": policy.read_only, "LogConfig": _LOG_CONFIG}
    if policy.drop_capabilities:
        host["CapDrop"] = ["ALL"]
    if policy.no_new_privileges:
        host["SecurityOpt"] = ["no-new-privileges"]
    return host
