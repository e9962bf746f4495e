"""The process runtime's agent processes: how one is started (nobody's child, in a
session of its own), the environment it gets, and how it is stopped (see
:mod:`gateway.runtimes.process`)."""

from __future__ import annotations

import asyncio
import json
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
        out, err = await launcher.communicate(json.dumps(environment(spec, folder)).encode())
    except OSError as error:
        raise SandboxStartError(f"the agent could not be started: {error}") from error
    fields = out.decode().split()
    if launcher.returncode != 0 or not fields:
        reason = err.decode(errors="replace").strip()[-files.LOG_TAIL_BYTES :]
        raise SandboxStartError(
            f"the agent could not be started (launcher exit {launcher.returncode}): {reason}"
        )
    return procfs.ProcessId(int(fields[0]), int(fields[1]) if len(fields) > 1 else None)


async def stop(process: procfs.ProcessId, grace: float) -> None:
    """SIGTERM the agent's group, SIGKILL after ``grace`` seconds, then whatever
    it started in other groups (shell tasks lead groups of their own)."""
    if not await asyncio.to_thread(procfs.is_alive, process):
        return
    family = await asyncio.to_thread(procfs.descendants, process.pid)
    procfs.signal_group(process, signal.SIGTERM)
    await asyncio.to_thread(process_freezer.thaw, process)  # a paused agent hears SIGTERM once thawed
    deadline = time.monotonic() + grace
    while await asyncio.to_thread(procfs.is_alive, process):
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)  # nothing to await: the agent is not our child
    procfs.signal_group(process, signal.SIGKILL)
    await asyncio.to_thread(procfs.kill, family)
