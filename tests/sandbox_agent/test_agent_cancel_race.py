"""A task cancelled while its process is being spawned (the cancel races the spawn) still ends
its whole process group: nothing it started in the background outlives it.

On an idle machine the window between the fork and ``loop.subprocess_exec`` returning is a
few loop iterations wide, too narrow to hit on purpose; a busy agent widens it. Here the
spawn is the loop's own, held open once the process exists; cancelled there, it does what
asyncio does with a spawn cancelled at that point: it kills the leader alone, and raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from agent_helpers import make_settings, process_gone

from sandbox_agent.runnables import TaskContext
from sandbox_agent.runnables.process import run_process
from tests.helpers import eventually


async def test_a_cancel_that_races_the_spawn_ends_the_whole_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, kill_grace_seconds=0.5)
    settings.workspace.mkdir(parents=True)
    settings.state_dir.mkdir(parents=True)
    context = TaskContext(
        task_id=uuid4(), emit=lambda event: None, settings=settings, workspace_root=settings.workspace,
        cwd=settings.workspace,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    spawn = loop.subprocess_exec
    spawned, release = asyncio.Event(), asyncio.Event()

    async def held_spawn(*args: Any, **kwargs: Any) -> Any:
        transport, protocol = await spawn(*args, **kwargs)
        spawned.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            transport.close()  # asyncio's answer to a spawn cancelled once the process exists
            raise
        return transport, protocol

    monkeypatch.setattr(loop, "subprocess_exec", held_spawn)
    pidfile = settings.workspace / "background.pid"
    script = f"sleep 1000 & echo $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; wait"
    running = asyncio.create_task(
        run_process(["/bin/sh", "-c", script], context, env={}, timeout=None, idle_timeout=None)
    )
    await spawned.wait()

    async def background() -> int | None:
        text = await asyncio.to_thread(lambda: pidfile.read_text() if pidfile.exists() else "")
        return int(text) if text.strip() else None

    child = await eventually(background, within=30, what="the background child started")
    try:
        running.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await running

        async def gone() -> bool:
            return process_gone(child)

        await eventually(gone, within=10, what="the background child ended with its task")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # a failing run leaves nothing behind
