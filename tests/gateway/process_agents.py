"""The process runtime's agents as ``/proc`` and their ``meta.json`` files show them: finding
the live ones under a state directory, and killing them all (a test's safety net)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from gateway.runtimes import procfs


def agent_processes(root: Path) -> dict[str, procfs.ProcessId]:
    """Every live process-runtime agent whose workspace is under ``root``, by the name of its
    sandbox's folder (its conversation id), from ``/proc``'s command lines: it finds agents no
    ``meta.json`` names any more (a folder removed while its agent lived on)."""
    found: dict[str, procfs.ProcessId] = {}
    for pid, raw in procfs.command_lines():
        argv = [arg.decode(errors="replace") for arg in raw]
        if "sandbox_agent" not in argv or "--workspace" not in argv[:-1]:
            continue
        workspace = Path(argv[argv.index("--workspace") + 1])
        if workspace.is_relative_to(root):
            process = procfs.identify(pid)
            if procfs.is_alive(process):
                found[workspace.parent.name] = process
    return found


def _recorded_agents(root: Path) -> list[procfs.ProcessId]:
    """The agents the process runtime's ``meta.json`` files under ``root`` name."""
    found = []
    for meta in root.glob("*/*/meta.json"):
        try:
            data = json.loads(meta.read_text())
            found.append(procfs.ProcessId(int(data["pid"]), data.get("started")))
        except (OSError, ValueError, KeyError):
            continue  # no pid yet: a start cut short (agent_processes() finds its agent)
    return found


def kill_agents(root: Path, within: float = 10.0) -> None:
    """Safety net: no agent process outlives its test, whatever the test did. Kills (with their
    process groups and descendants) the agents the metadata under ``root`` names and every agent
    (or its launcher) whose workspace is under ``root`` by its command line: a gateway killed
    between an agent's launch and the write of its pid leaves one no ``meta.json`` names. Repeats
    until none is left (a launcher orphaned by such a gateway may still be starting its agent);
    AssertionError if one still runs after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in [*_recorded_agents(root), *agent_processes(root).values()] if procfs.is_alive(p)]
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"agents under {root} outlived SIGKILL: {alive}")
        for process in alive:
            for child in procfs.descendants(process.pid):
                procfs.signal_group(child, signal.SIGKILL)
            procfs.signal_group(process, signal.SIGKILL)
        time.sleep(0.1)
