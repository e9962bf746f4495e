"""What one Docker sandbox uses: the engine's stats of its container (one sample, no
waiting for a second), the size of its volume's workspace, and its cgroup's peak.

- CPU: ``cpu_stats.cpu_usage.total_usage`` (nanoseconds, the container's cgroup).
- Memory: ``memory_stats.usage`` less the inactive page cache (what ``docker stats``
  shows); peak: cgroup v1's ``max_usage``, or cgroup v2's ``memory.peak`` where the
  gateway can read the host's cgroup tree, else the highest value sampled.
- Network: the container's interfaces (``networks``), bytes in and out, loopback aside.
  A sandbox with no network (``NetworkMode: none``) has no interface but loopback: 0,
  read as a fact, not as "unknown" (``None``). The gateway's own exchange with its agent
  goes over a Unix socket there, which is not network and is not counted (the gateway's
  ``convoy_proxied_bytes_total`` counts it); through a relay the same exchange crosses
  the sandbox's interface and is. The engine's stats of such a sandbox may list nothing or
  a stray entry: it is 0 either way.
- PIDs: ``pids_stats.current``.
- Disk: the files under ``workspace/`` of the volume's mount point, walked in a
  thread (bounded, :mod:`gateway.runtimes.usage_probes`); ``None`` where the gateway
  cannot read the engine's volumes (a gateway in a container without them mounted).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any
from uuid import UUID

from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import ResourceUsage
from gateway.runtimes.docker_engine import Engine, EngineNotFound
from gateway.runtimes.usage_probes import PeakMemory, tree_bytes

#: Where cgroup v2 keeps a container's group, by cgroup driver (systemd, cgroupfs).
_CGROUP_V2_DIRS = ("/sys/fs/cgroup/system.slice/docker-{id}.scope", "/sys/fs/cgroup/docker/{id}")


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _memory(stats: dict[str, Any]) -> tuple[int | None, int | None]:
    memory = stats.get("memory_stats") or {}
    usage = _int(memory.get("usage"))
    detail = memory.get("stats") or {}
    cache = _int(detail.get("total_inactive_file", detail.get("inactive_file"))) or 0
    current = None if usage is None else max(0, usage - cache)
    return current, _int(memory.get("max_usage"))


def _network(stats: dict[str, Any]) -> tuple[int | None, int | None]:
    interfaces = stats.get("networks")
    if not isinstance(interfaces, dict):
        return None, None
    rx = sum(_int(one.get("rx_bytes")) or 0 for one in interfaces.values())
    tx = sum(_int(one.get("tx_bytes")) or 0 for one in interfaces.values())
    return rx, tx


def _cgroup_v2_peak(container_id: str) -> int | None:
    for pattern in _CGROUP_V2_DIRS:
        try:
            return int((Path(pattern.format(id=container_id)) / "memory.peak").read_text())
        except (OSError, ValueError):
            continue
    return None


def usage_of(stats: dict[str, Any], disk: tuple[int, bool] | None, peak: int | None) -> ResourceUsage:
    """A usage from one engine stats sample, the workspace's size and a cgroup peak."""
    cpu = _int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage"))
    memory, max_usage = _memory(stats)
    rx, tx = _network(stats)
    peak = peak or max_usage or memory
    return ResourceUsage(
        cpu_seconds=None if cpu is None else round(cpu / 1e9, 3),
        memory_bytes=memory,
        memory_peak_bytes=peak if peak is None or memory is None else max(peak, memory),
        disk_bytes=None if disk is None else disk[0],
        disk_complete=disk is None or disk[1],
        network_rx_bytes=rx,
        network_tx_bytes=tx,
        pids=_int((stats.get("pids_stats") or {}).get("current")),
    )


async def measure(
    engine: Engine, install: str, conversation_id: UUID, peaks: PeakMemory
) -> ResourceUsage | None:
    """The usage of the sandbox of ``conversation_id``, or ``None`` when it is not running."""
    names = cfg.Names.of(install, conversation_id)
    info = await engine.inspect(names.sandbox)
    if info is None or not (info.get("State") or {}).get("Running"):
        return None
    try:
        stats = await engine.stats(names.sandbox)
    except EngineNotFound:
        return None
    filters = cfg.install_filter(install, **{cfg.CONVERSATION_ID: str(conversation_id)})
    volumes = [v for v in await engine.volumes(filters) if v.get("Name") == names.volume]
    mountpoint = volumes[0].get("Mountpoint") if volumes else None
    disk = await asyncio.to_thread(tree_bytes, Path(mountpoint) / "workspace") if mountpoint else None
    peak = await asyncio.to_thread(_cgroup_v2_peak, str(info.get("Id", "")))
    usage = usage_of(stats, disk, peak)
    if (info.get("HostConfig") or {}).get("NetworkMode") == cfg.NO_NETWORK:
        usage = dataclasses.replace(usage, network_rx_bytes=0, network_tx_bytes=0)  # no interface but lo
    return peaks.update(names.sandbox, usage)
