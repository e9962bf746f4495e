"""Memory readings of a bench run's conversations: what the engine charges their containers,
what their agents hold, what the host has left (``from docker_memory import idle_memory``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any
from uuid import UUID

from docker_installation import INSTALL

from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker import AiodockerEngine

MiB = 1024 * 1024


def memory(stats: dict[str, Any]) -> float:
    """What ``docker stats`` shows: usage less the page cache (cgroup v1 and v2)."""
    mem = stats.get("memory_stats") or {}
    detail = mem.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
    return float(mem.get("usage", 0) - cache)


def agent_status(sandbox_pid: int) -> dict[str, int]:
    """``VmRSS`` and ``RssAnon`` (kB) of the agent: the child of the container's init
    (the runtime starts sandboxes with ``Init``), else the container's first process.
    Empty when the engine's processes are not visible here (a remote engine)."""
    try:
        children = Path(f"/proc/{sandbox_pid}/task/{sandbox_pid}/children").read_text().split()
        pid = int(children[0]) if children else sandbox_pid
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in lines)
    return {key: int(value.split()[0]) for key, value in fields if key in ("VmRSS", "RssAnon")}


async def idle_memory(engine: AiodockerEngine, conversation_id: str) -> str:
    """One line: what the engine charges the sandbox and its relay, and the agent's RSS."""
    names = cfg.Names.of(INSTALL, UUID(conversation_id))
    sandbox = memory(await engine.stats(names.sandbox))
    relay = await relay_memory(engine, names)
    info = await engine.inspect(names.sandbox)
    status = agent_status(int(((info or {}).get("State") or {}).get("Pid") or 0))
    agent = (
        f"; agent RSS {status['VmRSS'] / 1024:.1f} MiB (anonymous {status['RssAnon'] / 1024:.1f} MiB)"
        if status
        else ""
    )
    return (
        f"sandbox {sandbox / MiB:5.1f} MiB ({sandbox / 1e6:.1f} MB), relay {relay / MiB:5.1f} MiB, "
        f"conversation {(sandbox + relay) / MiB:5.1f} MiB{agent}"
    )


async def relay_memory(engine: AiodockerEngine, names: cfg.Names) -> float:
    """What the engine charges the relay; 0 for a sandbox with no network (it has none)."""
    return memory(await engine.stats(names.relay)) if await engine.inspect(names.relay) else 0.0


async def engine_memory(engine: AiodockerEngine, conversation_ids: list[str], sample: int = 5) -> float:
    """What the engine charges a conversation (sandbox + relay), on average over ``sample`` of
    ``conversation_ids`` spread over all of them (the oldest have settled to idle, the newest not yet)."""
    step = max(1, len(conversation_ids) // sample)
    chosen = conversation_ids[::step][:sample]
    total = 0.0
    for conversation_id in chosen:
        names = cfg.Names.of(INSTALL, UUID(conversation_id))
        total += memory(await engine.stats(names.sandbox)) + await relay_memory(engine, names)
    return total / len(chosen)


def host_available() -> int:
    """The host's ``MemAvailable`` in bytes: what every conversation costs, containerd's
    shims, fuse-overlayfs and docker-proxy included (0 when not on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0
