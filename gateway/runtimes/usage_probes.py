"""Measuring a sandbox from the host: its workspace's size, its processes' CPU and memory.

Blocking helpers (they walk directories and read ``/proc``); runtimes call them
with ``asyncio.to_thread``. Every walk is bounded (:data:`MAX_ENTRIES`): a
workspace of millions of files costs one bounded walk and says it is partial.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from gateway.runtimes import procfs
from gateway.runtimes.base import ResourceUsage

#: Directory entries one workspace walk looks at, at most.
MAX_ENTRIES = 200_000
_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_bytes(root: Path, max_entries: int = MAX_ENTRIES) -> tuple[int, bool] | None:
    """``(bytes, complete)``: the sizes of the regular files under ``root`` (symlinks are
    not followed, hard links counted once per name), and whether the walk saw every entry
    (False: it stopped after ``max_entries``). ``None`` when ``root`` cannot be read."""
    total, seen = 0, 0
    pending = [str(root)]
    try:
        os.stat(root)
    except OSError:
        return None
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        return total, False
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed meanwhile
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
                    elif stat.S_ISREG(info.st_mode):
                        total += info.st_size
        except OSError:
            continue  # a directory removed or unreadable meanwhile
    return total, True


@dataclass(frozen=True)
class ProcessesUsage:
    """What a set of live processes uses: CPU seconds (their own and their reaped
    children's), resident bytes now, the sum of each one's resident peak, how many."""

    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: int
    count: int


def _one(pid: int) -> tuple[float, int, int] | None:
    """``(cpu seconds, resident bytes, peak resident bytes)`` of one process, or None."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
        status = (_PROC / str(pid) / "status").read_text()
    except (OSError, ValueError):
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 15 or fields[0] in ("Z", "X", "x"):
        return None
    # utime, stime, cutime, cstime (fields 14-17 of proc(5)): reaped children count too.
    ticks = sum(int(value) for value in fields[11:15])
    memory: dict[str, int] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0]) * 1024  # kB
    rss = memory.get("VmRSS", 0)
    return ticks / _TICKS, rss, max(rss, memory.get("VmHWM", 0))


def processes_usage(pids: list[int]) -> ProcessesUsage:
    """The usage of ``pids`` (gone ones are left out)."""
    cpu, rss, peak, count = 0.0, 0, 0, 0
    for pid in pids:
        one = _one(pid)
        if one is not None:
            cpu, rss, peak, count = cpu + one[0], rss + one[1], peak + one[2], count + 1
    return ProcessesUsage(cpu, rss, peak, count)


def family_usage(leader: procfs.ProcessId) -> ProcessesUsage | None:
    """The usage of ``leader`` (while it is the same live process) and all its descendants."""
    if not procfs.is_alive(leader):
        return None
    return processes_usage([leader.pid, *(child.pid for child in procfs.descendants(leader.pid))])


def children_in(folder: Path) -> list[int]:
    """This process's children whose working directory is inside ``folder``, and their
    descendants: the tasks an in-process agent started in its workspace."""
    found: list[int] = []
    inside = str(folder.resolve())
    for child in procfs.descendants(os.getpid()):
        try:
            cwd = os.readlink(_PROC / str(child.pid) / "cwd")
        except OSError:
            continue
        if cwd == inside or cwd.startswith(inside + os.sep):
            found += [child.pid, *(grandchild.pid for grandchild in procfs.descendants(child.pid))]
    return sorted(set(found))


def _usage(processes: ProcessesUsage, workspace: Path) -> ResourceUsage:
    disk = tree_bytes(workspace)
    return ResourceUsage(
        cpu_seconds=round(processes.cpu_seconds, 3),
        memory_bytes=processes.memory_bytes,
        memory_peak_bytes=processes.memory_peak_bytes,
        disk_bytes=None if disk is None else disk[0],
        disk_complete=disk is None or disk[1],
        pids=processes.count,
    )


def agent_usage(agent: procfs.ProcessId, workspace: Path) -> ResourceUsage | None:
    """A local agent process and everything it started (the process runtime); ``None``
    when the agent is gone. Network is unknowable here (a process shares the host's
    network namespace, whose counters are the whole host's): ``None``."""
    processes = family_usage(agent)
    return None if processes is None else _usage(processes, workspace)


def in_process_usage(folder: Path, workspace: Path) -> ResourceUsage:
    """An agent inside this process (the memory runtime): its task processes (children
    of this process working in ``folder``) and its workspace. The agent itself is part
    of the gateway's process and is not counted; network: ``None``."""
    return _usage(processes_usage(children_in(folder)), workspace)


class PeakMemory:
    """The highest memory peak reported per sandbox, so a task that ended still counts:
    a runtime without a cgroup keeps the peaks of processes that are gone this way."""

    def __init__(self) -> None:
        self._peaks: dict[object, int] = {}

    def update(self, key: object, usage: ResourceUsage) -> ResourceUsage:
        if usage.memory_peak_bytes is None:
            return usage
        peak = max(self._peaks.get(key, 0), usage.memory_peak_bytes)
        self._peaks[key] = peak
        return dataclasses.replace(usage, memory_peak_bytes=peak)

    def forget(self, key: object) -> None:
        self._peaks.pop(key, None)
