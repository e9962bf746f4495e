"""Local processes as the process runtime sees them: alive or not, and what they started.

Blocking helpers (they read ``/proc``); callers run them with ``asyncio.to_thread``
when they scan many. A process is named by its pid *and* its start time, so a pid
that the kernel reused for an unrelated process is never mistaken for an agent
(and never signalled).
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessId:
    """A process at one moment of its life: ``started`` is its start time in clock
    ticks since boot (``None`` where there is no ``/proc``)."""

    pid: int
    started: int | None


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or ``None``."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return text[text.rfind(")") + 2 :].split()


def state(pid: int) -> str:
    """The process's state letter (``R``, ``S``, ``T`` stopped, ``Z`` zombie, ...); "" when gone."""
    fields = _stat(pid)
    return fields[0] if fields else ""


def start_time(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def identify(pid: int) -> ProcessId:
    return ProcessId(pid, start_time(pid))


def is_alive(process: ProcessId) -> bool:
    """True while the process runs (zombies count as gone)."""
    if process.pid <= 1:
        return False
    if not _PROC.is_dir():
        try:
            os.kill(process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = _stat(process.pid)
    if fields is None or fields[0] in ("Z", "X", "x"):
        return False
    return process.started is None or int(fields[19]) == process.started


def descendants(pid: int) -> list[ProcessId]:
    """Every live descendant of ``pid`` (children first), found through their parent pids.

    One read of each ``/proc/<pid>/stat`` gives both a process's parent and its start time,
    so a process that ends during the walk (and a pid the kernel hands to another meanwhile)
    never shows up under a name that is not its own; zombies (ended, not reaped yet) are gone.
    """
    if not _PROC.is_dir():
        return []
    children: dict[int, list[ProcessId]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None or len(fields) <= 19 or fields[0] in ("Z", "X", "x"):
            continue
        children.setdefault(int(fields[1]), []).append(ProcessId(int(entry.name), int(fields[19])))
    found: list[ProcessId] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending.extend(children.get(child.pid, []))
    return found


def signal_group(process: ProcessId, signum: int) -> None:
    """Send ``signum`` to the process group led by ``process`` (a session leader),
    or to the process alone when it leads none. Gone processes are ignored."""
    if not is_alive(process) or process.pid == os.getpid():
        return
    try:
        if os.getpgid(process.pid) == process.pid and process.pid != os.getpgrp():
            os.killpg(process.pid, signum)
        else:
            os.kill(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def kill(processes: list[ProcessId]) -> None:
    """SIGKILL each still-living process of ``processes`` and its group."""
    for process in processes:
        signal_group(process, signal.SIGKILL)


def command_lines() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, argv)`` of every process whose command line can be read (gone ones skipped)."""
    for entry in _PROC.glob("[0-9]*"):
        try:
            yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue


def agents_of(state_dir: Path) -> list[ProcessId]:
    """The processes of this user whose command line says ``--state-dir <state_dir>``: the
    agent of that folder and a launcher still starting it. How a sandbox whose metadata never
    got its pid (a gateway killed during the launch) is still found and stopped."""
    wanted = {os.fsencode(state_dir), os.fsencode(state_dir.absolute())}
    found = []
    for pid, argv in command_lines():
        if pid == os.getpid() or not _owned(pid):
            continue
        if any(flag == b"--state-dir" and value in wanted for flag, value in itertools.pairwise(argv)):
            found.append(identify(pid))
    return found


def _owned(pid: int) -> bool:
    """Whether ``pid`` runs as this process's user."""
    try:
        return (_PROC / str(pid)).stat().st_uid == os.getuid()
    except OSError:
        return False
