"""Telling a kill by the kernel's OOM killer from any other SIGKILL.

Contract:
- The exit status cannot say who sent a SIGKILL; the memory cgroup can: it
  counts the processes the OOM killer ended (``oom_kill`` in ``memory.events``
  under cgroup v2, in ``memory.oom_control`` under cgroup v1).
- :func:`oom_kills` reads that counter (``None`` when there is none to read);
  a task reads it before it starts and again when its leader died of SIGKILL
  (or a shell reported a child's, exit code 128 + 9): if it grew meanwhile,
  the task ran out of memory.
- The file is ``settings.memory_events_file`` when set (tests point it at a
  file of their own), else found once from ``/proc/self/cgroup``.
- Limitation: the counter is the whole cgroup's (in Docker, the container's).
  A task that dies of someone's SIGKILL at the moment another process of the
  sandbox is OOM-killed is reported as out of memory too.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path

from sandbox_agent.settings import AgentSettings

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Exit codes of a leader that died of SIGKILL itself (-9) or reports a child that did (137).
KILLED_CODES = (-signal.SIGKILL, 128 + signal.SIGKILL)


def read_counter(path: Path) -> int | None:
    """The ``oom_kill`` value of a ``key value`` lines file; ``None`` if missing or unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _counter(data)


def _counter(data: bytes) -> int | None:
    for line in data.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def _candidates(proc_cgroup: str) -> list[Path]:
    v2: list[Path] = []
    v1: list[Path] = []
    for line in proc_cgroup.splitlines():
        _, controllers, rel = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        rel = rel.lstrip("/")
        if controllers == "":
            v2.append(CGROUP_ROOT / rel / "memory.events")
        elif "memory" in controllers.split(","):
            v1.append(CGROUP_ROOT / "memory" / rel / "memory.oom_control")
    # A container sees its own cgroup at the root whatever /proc/self/cgroup names.
    found = [*v2, CGROUP_ROOT / "memory.events", *v1, CGROUP_ROOT / "memory" / "memory.oom_control"]
    return list(dict.fromkeys(found))


@functools.cache
def detect() -> Path | None:
    """This process's memory cgroup file with an ``oom_kill`` counter. Blocking; cached."""
    try:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        proc_cgroup = ""
    for path in _candidates(proc_cgroup):
        if read_counter(path) is not None:
            return path
    return None


@functools.cache
def _detected_fd() -> int | None:
    """The detected cgroup file, opened once for the agent's life (see :func:`oom_kills`)."""
    path = detect()
    if path is None:
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _read(configured: Path | None) -> int | None:
    if configured is not None:
        return read_counter(configured)
    fd = _detected_fd()
    if fd is None:
        return None
    try:
        return _counter(os.pread(fd, 4096, 0))  # the kernel makes the text up afresh at offset 0
    except OSError:
        return None


def oom_kills(settings: AgentSettings) -> int | None:
    """The OOM kill counter now; ``None`` when it cannot be read. Read on the event loop: a
    cgroup file is a few bytes the kernel makes up from memory (no disk, nothing to wait for),
    and a worker thread's round trip cost more than the read on every task's start. The
    detected cgroup file is kept open and read with one ``pread`` (an open, a buffered text
    read and a close cost some 80 us on every task's start); a configured one (a test's) is
    opened on every read, as it may be replaced."""
    return _read(settings.memory_events_file)


def oom_error(exit_code: int) -> str:
    """The task's error when its processes ran out of memory."""
    if exit_code < 0:
        return f"out of memory: killed by the kernel's OOM killer (signal {-exit_code})"
    return f"out of memory: a process was killed by the kernel's OOM killer (exit code {exit_code})"
