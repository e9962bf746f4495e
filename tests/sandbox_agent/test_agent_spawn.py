"""How a task's process is started (``sandbox_agent.runnables.child`` through ``run_process``):
its cwd, its environment without the token, its own session and group, its stdin, what it is
handed, exit codes, and 127 when it cannot start."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from agent_helpers import make_settings, process_gone

from sandbox_agent.protocol import AGENT_TOKEN_ENV, TaskOutput
from sandbox_agent.runnables import Outcome, TaskContext
from sandbox_agent.runnables.process import run_process
from sandbox_agent.stdin import TaskStdin
from tests.helpers import eventually


class Recorder:
    """A task context whose events are kept, with the output joined per stream."""

    def __init__(self, root: Path, **overrides: Any) -> None:
        self.settings = make_settings(root, kill_grace_seconds=0.5, **overrides)
        self.settings.workspace.mkdir(parents=True)
        self.settings.state_dir.mkdir(parents=True)
        self.events: list[Any] = []
        self.context = TaskContext(
            task_id=uuid4(), emit=self.events.append, settings=self.settings,
            workspace_root=self.settings.workspace, cwd=self.settings.workspace,
        )  # fmt: skip

    def output(self, stream: str = "stdout") -> str:
        return "".join(e.data for e in self.events if isinstance(e, TaskOutput) and e.stream == stream)

    async def run(self, argv: list[str], **kwargs: Any) -> Outcome:
        kwargs.setdefault("env", {})
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("idle_timeout", None)
        return await run_process(argv, self.context, **kwargs)


async def test_the_process_runs_in_the_task_cwd(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    sub = task.settings.workspace / "sub dir"
    sub.mkdir()
    task.context.cwd = sub
    outcome = await task.run(["/bin/sh", "-c", "pwd"])
    assert outcome == Outcome(exit_code=0)
    assert task.output() == f"{sub}\n"


async def test_the_environment_is_the_agents_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(AGENT_TOKEN_ENV, "secret-of-the-agent")
    monkeypatch.setenv("CONVOY_TEST_INHERITED", "inherited")
    task = Recorder(tmp_path)
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    outcome = await task.run(["python3", "-c", code], env={"CONVOY_TEST_OWN": "own"})
    assert outcome.exit_code == 0, task.output("stderr")
    env = json.loads(task.output())
    assert AGENT_TOKEN_ENV not in env
    assert env["CONVOY_TEST_INHERITED"] == "inherited"
    assert env["CONVOY_TEST_OWN"] == "own"


async def test_the_process_leads_a_session_and_group_of_its_own(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    code = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    outcome = await task.run(["python3", "-c", code])
    assert outcome.exit_code == 0, task.output("stderr")
    pid, pgid, sid = map(int, task.output().split())
    assert pid == pgid == sid
    assert sid != os.getsid(0)


async def test_the_whole_group_is_ended_when_the_leader_exits(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    pidfile = task.settings.workspace / "bg.pid"
    outcome = await task.run(["/bin/sh", "-c", f"sleep 1000 > /dev/null 2>&1 & echo $! > {pidfile}"])
    assert outcome == Outcome(exit_code=0)
    background = int(pidfile.read_text())

    async def gone() -> bool:
        return process_gone(background)

    await eventually(gone, within=10, what="the leader's background child ended")


async def test_cancel_ends_the_whole_group(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    pidfile = task.settings.workspace / "bg.pid"
    running = asyncio.create_task(task.run(["/bin/sh", "-c", f"sleep 1000 & echo $! > {pidfile}; wait"]))

    async def started() -> int:
        text = pidfile.read_text() if pidfile.exists() else ""
        return int(text) if text.strip() else 0

    background = await eventually(started, within=30, what="the background child started")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running

    async def gone() -> bool:
        return process_gone(background)

    await eventually(gone, within=10, what="the background child ended with its task")


@pytest.mark.parametrize("argv", [["/no/such/program"], ["no-such-program-on-path"]])
async def test_a_program_that_cannot_start_ends_127(tmp_path: Path, argv: list[str]) -> None:
    task = Recorder(tmp_path)
    outcome = await task.run(argv)
    assert outcome.exit_code == 127
    assert outcome.error is not None and outcome.error.startswith(f"cannot start {argv[0]!r}")


async def test_cannot_start_closes_the_descriptors_it_was_handed(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    read_end, write_end = os.pipe()
    outcome = await task.run(["/no/such/program"], pass_fds=(read_end,))
    assert outcome.exit_code == 127
    with pytest.raises(OSError):
        os.fstat(read_end)
    os.close(write_end)


async def test_exit_codes_and_signals(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    assert await task.run(["/bin/sh", "-c", "exit 3"]) == Outcome(exit_code=3, error="exited with code 3")
    assert await task.run(["/bin/sh", "-c", "kill -TERM $$"]) == Outcome(
        exit_code=-15, error="killed by signal 15"
    )


async def test_stdin_is_dev_null_by_default(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    outcome = await task.run(["/bin/sh", "-c", "cat; echo done"])
    assert outcome == Outcome(exit_code=0)
    assert task.output() == "done\n"


async def test_stdin_data_is_fed_then_closed(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    data = b"x" * 300_000  # more than a pipe holds: fed as the child reads
    outcome = await task.run(["/bin/sh", "-c", "wc -c"], stdin_data=data)
    assert outcome == Outcome(exit_code=0)
    assert task.output().strip() == str(len(data))


async def test_an_open_stdin_is_attached_then_detached(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    task.context.stdin = stdin = TaskStdin(task.context.task_id)
    running = asyncio.create_task(task.run(["/bin/sh", "-c", "read line; echo got $line"]))
    assert await stdin.write(b"hello\n") == 6
    outcome = await running
    assert outcome == Outcome(exit_code=0)
    assert task.output() == "got hello\n"
    assert stdin.closed


async def test_pass_fds_reach_the_child_and_are_closed_here(tmp_path: Path) -> None:
    task = Recorder(tmp_path)
    read_end, write_end = os.pipe()
    os.write(write_end, b"through the pipe")
    os.close(write_end)
    code = "import os, sys; sys.stdout.write(os.read(int(sys.argv[1]), 100).decode())"
    outcome = await task.run(["python3", "-c", code, str(read_end)], pass_fds=(read_end,))
    assert outcome == Outcome(exit_code=0)
    assert task.output() == "through the pipe"
    with pytest.raises(OSError):
        os.fstat(read_end)


async def test_output_past_the_budget_goes_to_the_overflow_file(tmp_path: Path) -> None:
    task = Recorder(tmp_path, max_task_output_bytes=1000)
    outcome = await task.run(["python3", "-c", "import sys; sys.stdout.write('y' * 200_000)"])
    assert outcome == Outcome(exit_code=0)
    assert task.output() == "y" * 1000
    overflow = task.settings.workspace / task.settings.output_dir_name / f"{task.context.task_id}.log"
    assert overflow.read_bytes() == b"y" * 199_000


async def test_without_pidfds_the_exit_is_heard_from_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pidfds(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds)
    task = Recorder(tmp_path)
    assert await task.run(["/bin/sh", "-c", "echo hi; exit 4"]) == Outcome(
        exit_code=4, error="exited with code 4"
    )
    assert task.output() == "hi\n"
