"""Out of memory: a SIGKILL the memory cgroup counts as an OOM kill ends the task saying so.

The cgroup file is simulated: the task itself bumps the ``oom_kill`` counter of a
file the agent is pointed at, then dies the way the OOM killer's victims die.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import make_settings, served

from sandbox_agent.runnables import oom

DIE_BY_SIGKILL = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
BUMP = "import os\nopen(os.environ['OOM_FILE'], 'w').write('oom 1\\noom_kill 1\\n')\n"


@pytest.mark.parametrize(
    ("runnable", "exit_code", "error"),
    [
        ({"type": "Python", "code": BUMP + DIE_BY_SIGKILL}, -9, "out of memory: killed by the kernel's OOM"),
        ({"type": "Python", "code": DIE_BY_SIGKILL}, -9, "killed by signal 9"),
        # a shell reports its child's SIGKILL as 128 + 9
        ({"type": "Shell", "command": "echo 'oom_kill 1' > \"$OOM_FILE\"; exit 137"}, 137, "out of memory"),
        ({"type": "Shell", "command": "exit 137"}, 137, "exited with code 137"),
        # the counter grew, but the task was not killed: not an OOM death
        ({"type": "Shell", "command": "echo 'oom_kill 1' > \"$OOM_FILE\"; exit 3"}, 3, "exited with code 3"),
    ],
)
async def test_only_a_kill_the_cgroup_counted_is_out_of_memory(
    serve: Callable[..., Any], tmp_path: Path, runnable: dict[str, Any], exit_code: int, error: str
) -> None:
    counter = tmp_path / "memory.events"
    counter.write_text("low 0\nhigh 0\nmax 4\noom 0\noom_kill 0\n")
    async with served(serve, make_settings(tmp_path, memory_events_file=counter)) as agent:
        task = await agent.run({**runnable, "env": {"OOM_FILE": str(counter)}})
        assert task["status"] == "ERROR" and task["exit_code"] == exit_code, task
        assert task["error"].startswith(error), task
        assert ("out of memory" in task["error"]) == error.startswith("out of memory")
        assert (await agent.client.get("/agent-info")).status_code == 200


async def test_without_a_readable_counter_a_sigkill_is_just_a_signal(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, memory_events_file=tmp_path / "missing")
    async with served(serve, settings) as agent:
        task = await agent.run({"type": "Python", "code": DIE_BY_SIGKILL})
        assert task["status"] == "ERROR" and task["error"] == "killed by signal 9", task


def test_the_counter_is_read_from_either_cgroup_version(tmp_path: Path) -> None:
    v1 = tmp_path / "memory.oom_control"
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n")
    v2 = tmp_path / "memory.events"
    v2.write_text("low 0\nhigh 2\nmax 9\noom 3\noom_kill 2\noom_group_kill 0\n")
    assert oom.read_counter(v1) == 5
    assert oom.read_counter(v2) == 2
    assert oom.read_counter(tmp_path / "absent") is None


def test_the_cgroup_files_are_found_from_proc_self_cgroup() -> None:
    root = oom.CGROUP_ROOT
    v2 = oom._candidates("0::/user.slice/session-3.scope\n")
    assert v2[0] == root / "user.slice/session-3.scope/memory.events"
    v1 = oom._candidates("12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert root / "docker/abc/memory.oom_control" not in v1  # v1 files live under the memory mount
    assert root / "memory/docker/abc/memory.oom_control" in v1
    assert v1[-1] == root / "memory/memory.oom_control"  # what a container sees as its own
