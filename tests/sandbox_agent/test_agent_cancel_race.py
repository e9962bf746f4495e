"""A task cancelled while its process is being spawned (the cancel races the spawn) still ends
its whole process group: nothing it started in the background outlives it.

The spawn is one synchronous call (``sandbox_agent.runnables.child.start``); a cancel that
comes meanwhile lands at the first ``await`` after it. Here the spawn is the real one, held
until the process has started its background child, and the cancel is requested from inside
it: the moment a racing cancel would land.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from agent_helpers import make_settings, process_gone

from sandbox_agent.runnables import TaskContext
from sandbox_agent.runnables import child as child_module
from sandbox_agent.runnables import process as process_module
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
    pidfile = settings.workspace / "background.pid"
    script = f"sleep 1000 & echo $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; wait"

    def held_start(*args: Any, **kwargs: Any) -> Any:
        started = child_module.start(*args, **kwargs)
        deadline = time.monotonic() + 30
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.01)  # holds the loop, as a busy agent would
        current = asyncio.current_task()
        assert current is not None
        current.cancel()  # the racing cancel: it lands at the first await after the spawn
        return started

    monkeypatch.setattr(process_module, "start", held_start)
    running = asyncio.create_task(
        run_process(["/bin/sh", "-c", script], context, env={}, timeout=None, idle_timeout=None)
    )
    with pytest.raises(asyncio.CancelledError):
        await running
    child = int(pidfile.read_text())
    try:

        async def gone() -> bool:
            return process_gone(child)

        await eventually(gone, within=10, what="the background child ended with its task")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)  # a failing run leaves nothing behind
