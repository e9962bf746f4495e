"""The process runtime's agent processes: how one is started (nobody's child, in a
session of its own), the environment it gets, and how it is stopped (see
:mod:`gateway.runtimes.process`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from gateway.errors import SandboxStartError
from gateway.runtimes import process_files as files
from gateway.runtimes import process_freezer, procfs
from gateway.runtimes.base import SandboxSpec
from gateway.runtimes.claiming import CLAIM_FILE
from sandbox_agent.protocol import AGENT_TOKEN_FILE_ENV, CONVERSATION_ID_ENV, RESERVED_ENV_PREFIX

log = logging.getLogger("convoy.process")

#: Seconds a cancelled launch waits for its launcher to report the agent it started.
_LAUNCHER_WAIT = 10.0
#: Seconds a stop waits for the processes it sent SIGKILL to end (the kernel's part: quick,
#: but not instant on a loaded machine).
_KILL_WAIT = 10.0
#: The file (in the sandbox's folder, 0600) the agent reads its token from.
TOKEN = "token"
_PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH")

# Runs as its own short-lived process (in the gateway's environment; the agent's comes
# on stdin, so a broken one cannot break the launcher): starts the agent in a new
# session, reports its pid and start time, and exits, so the agent is nobody's child.
_LAUNCHER = """
import json, subprocess, sys
env = json.load(sys.stdin)
log = open(sys.argv[1], "ab")
agent = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         env=env, start_new_session=True, close_fds=True)
try:
    with open(f"/proc/{agent.pid}/stat") as stat:
        text = stat.read()
    started = text[text.rfind(")") + 2:].split()[19]
except OSError:
    started = ""
print(agent.pid, started, flush=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(spec: SandboxSpec, folder: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name in _PASSED_ENV or name.startswith("LC_")}
    env["HOME"] = str(folder / "workspace")
    env.update(
        {name: value for name, value in spec.env.items() if not name.upper().startswith(RESERVED_ENV_PREFIX)}
    )
    env[AGENT_TOKEN_FILE_ENV] = str(folder / TOKEN)
    env[CONVERSATION_ID_ENV] = str(spec.conversation_id)
    return env


async def launch(spec: SandboxSpec, folder: Path, port: int) -> procfs.ProcessId:
    """Start the agent (nobody's child) and answer its process. All or nothing: a launch that
    fails or is cancelled leaves no agent (a cancelled one waits for the launcher, which starts
    the agent whatever happens, and stops what it started before re-raising)."""
    argv = [sys.executable, "-m", "sandbox_agent", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workspace", str(folder / "workspace"), "--state-dir", str(folder / "state")]
    argv += ["--claim-file", str(folder / CLAIM_FILE), *(["--spare"] if spec.pool is not None else [])]
    argv += ["--template", spec.template]
    try:
        launcher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LAUNCHER,
            str(folder / files.LOG),
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=folder / "workspace",
        )
    except OSError as error:
        raise SandboxStartError(f"the agent could not be started: {error}") from error
    talk = asyncio.ensure_future(launcher.communicate(json.dumps(environment(spec, folder)).encode()))
    try:
        out, err = await asyncio.shield(talk)
    except asyncio.CancelledError:
        await asyncio.shield(_abandon(launcher, talk))
        raise
    except OSError as error:
        raise SandboxStartError(f"the agent could not be started: {error}") from error
    process = _reported(out)
    if launcher.returncode != 0 or process is None:
        reason = err.decode(errors="replace").strip()[-files.LOG_TAIL_BYTES :]
        if process is not None:
            await stop(process, 0.0)
        raise SandboxStartError(
            f"the agent could not be started (launcher exit {launcher.returncode}): {reason}"
        )
    return process


def _reported(out: bytes) -> procfs.ProcessId | None:
    """The agent's pid and start time as the launcher printed them; ``None`` when it did not."""
    fields = out.decode(errors="replace").split()
    if not fields or not fields[0].isdigit():
        return None
    started = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
    return procfs.ProcessId(int(fields[0]), started)


async def _abandon(launcher: asyncio.subprocess.Process, talk: asyncio.Future[tuple[bytes, bytes]]) -> None:
    """A cancelled launch: the launcher runs to its end (a second or so at most), and the agent
    it reports is stopped at once (nothing of it was written anywhere yet)."""
    try:
        out, _ = await asyncio.wait_for(talk, _LAUNCHER_WAIT)
    except (TimeoutError, OSError):
        with contextlib.suppress(ProcessLookupError):
            launcher.kill()
        return
    process = _reported(out)
    if process is not None:
        await stop(process, 0.0)


async def stop(process: procfs.ProcessId, grace: float) -> bool:
    """SIGTERM the agent's group, SIGKILL after ``grace`` seconds, then whatever it started in
    other groups (shell tasks lead groups of their own), and wait until all of them are gone
    (bounded: ``_KILL_WAIT`` seconds). ``False`` when something was still alive after that (it
    is logged: it has been sent SIGKILL and the kernel has yet to end it)."""
    if not await asyncio.to_thread(procfs.is_alive, process):
        return True
    family = await asyncio.to_thread(procfs.descendants, process.pid)
    procfs.signal_group(process, signal.SIGTERM)
    await asyncio.to_thread(process_freezer.thaw, process)  # a paused agent hears SIGTERM once thawed
    if not await _gone([process], grace):
        # Children started during the grace (before the agent heard SIGTERM) are killed too.
        family += [p for p in await asyncio.to_thread(procfs.descendants, process.pid) if p not in family]
    procfs.signal_group(process, signal.SIGKILL)
    await asyncio.to_thread(procfs.kill, family)
    if await _gone([process, *family], _KILL_WAIT):
        return True
    log.warning("agent %s or its processes outlived SIGKILL for %gs", process.pid, _KILL_WAIT)
    return False


async def _gone(processes: list[procfs.ProcessId], within: float) -> bool:
    """Whether every one of ``processes`` ended within ``within`` seconds (polled: they are not
    our children, so there is no exit to await)."""
    deadline = time.monotonic() + within
    while True:
        alive = await asyncio.to_thread(_living, processes)
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        processes = alive
        await asyncio.sleep(0.05)


def _living(processes: list[procfs.ProcessId]) -> list[procfs.ProcessId]:
    return [process for process in processes if procfs.is_alive(process)]
