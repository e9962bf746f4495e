"""Tasks over HTTP: runnables, statuses, cancel, timeouts, output budget, persistence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Served, append_bytes, group_gone, make_settings, process_gone, served

from sandbox_agent.protocol import Task, TaskStatus
from tests.helpers import eventually


async def statuses(agent: Served, task_id: str) -> list[str]:
    events = await agent.events(task_id=task_id, type="TaskStatusUpdate")
    return [e["detail"]["status"] for e in events]


async def test_ticker_ticks_and_completes(agent: Served) -> None:
    task = await agent.run({"type": "Ticker", "message": "tock", "interval": 0.01, "iterations": 5})
    assert task["status"] == "COMPLETED"
    ticks = await agent.events(task_id=task["id"], type="Tick")
    assert [t["detail"]["iteration"] for t in ticks] == [1, 2, 3, 4, 5]
    assert {t["detail"]["message"] for t in ticks} == {"tock"}
    assert await statuses(agent, task["id"]) == ["PENDING", "RUNNING", "COMPLETED"]


async def test_shell_streams_output_and_records_the_exit_code(agent: Served) -> None:
    task = await agent.run(
        {"type": "Shell", "command": "echo out; echo err >&2; printf 'caf\\303\\251'; exit 7"}
    )
    assert task["status"] == "ERROR"
    assert task["exit_code"] == 7
    assert await agent.output(task["id"]) == "out\ncafé"
    assert await agent.output(task["id"], "stderr") == "err\n"
    assert await statuses(agent, task["id"]) == ["PENDING", "RUNNING", "ERROR"]


async def test_shell_argv_runs_in_cwd_with_env_and_without_the_token(agent: Served) -> None:
    (agent.settings.workspace / "sub").mkdir(parents=True)
    task = await agent.run(
        {
            "type": "Shell",
            "command": ["/bin/sh", "-c", 'pwd; echo "$GREETING"; echo "token=${CONVOY_AGENT_TOKEN:-none}"'],
            "cwd": "sub",
            "env": {"GREETING": "hello"},
        }
    )
    assert task["status"] == "COMPLETED" and task["exit_code"] == 0
    lines = (await agent.output(task["id"])).splitlines()
    real = await asyncio.to_thread(os.path.realpath, agent.settings.workspace / "sub")
    assert lines[0] == real
    assert lines[1:] == ["hello", "token=none"]


async def test_missing_program_is_an_error_not_a_crash(agent: Served) -> None:
    task = await agent.run({"type": "Shell", "command": ["/definitely/not/here"]})
    assert task["status"] == "ERROR"
    assert "cannot start" in task["error"]


async def test_python_runnable(agent: Served) -> None:
    code = "import sys\nprint(sum(range(10)))\nprint('oops', file=sys.stderr)\nsys.exit(0)\n" + "#" * 200_000
    task = await agent.run({"type": "Python", "code": code})
    assert task["status"] == "COMPLETED"
    assert await agent.output(task["id"]) == "45\n"
    assert await agent.output(task["id"], "stderr") == "oops\n"


async def test_python_exception_is_an_error_with_its_traceback(agent: Served) -> None:
    task = await agent.run({"type": "Python", "code": "raise ValueError('boom')"})
    assert task["status"] == "ERROR" and task["exit_code"] == 1
    assert "ValueError: boom" in await agent.output(task["id"], "stderr")


async def test_cancel_kills_the_whole_process_group(agent: Served) -> None:
    response = await agent.client.post(
        "/task", json={"runnable": {"type": "Shell", "command": "sleep 1000 & echo $! $$; sleep 1000"}}
    )
    task_id = response.json()["id"]

    async def pids() -> list[int] | None:
        text = await agent.output(task_id)
        return [int(p) for p in text.split()] if text.endswith("\n") else None

    background, shell = await eventually(pids)
    assert not process_gone(background) and not process_gone(shell)
    cancelled = await agent.client.delete(f"/task/{task_id}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    await eventually(lambda: _async(process_gone(background) and process_gone(shell) and group_gone(shell)))
    assert await statuses(agent, task_id) == ["PENDING", "RUNNING", "CANCELLING", "CANCELLED"]
    again = await agent.client.delete(f"/task/{task_id}")
    assert again.status_code == 409


async def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with served(serve, make_settings(tmp_path, kill_grace_seconds=0.5)) as agent:
        command = "trap '' TERM; echo $$; while true; do sleep 0.1; done"
        task_id = (
            await agent.client.post("/task", json={"runnable": {"type": "Shell", "command": command}})
        ).json()["id"]
        pid = int(await eventually(lambda: _nonempty(agent.output(task_id))))
        assert (await agent.client.delete(f"/task/{task_id}")).json()["status"] == "CANCELLED"
        await eventually(lambda: _async(group_gone(pid)))


async def test_cancel_ticker_and_unknown_task(agent: Served) -> None:
    response = await agent.client.post(
        "/task", json={"runnable": {"type": "Ticker", "interval": 60, "iterations": 5}}
    )
    task_id = response.json()["id"]
    assert (await agent.client.delete(f"/task/{task_id}")).json()["status"] == "CANCELLED"
    missing = await agent.client.delete("/task/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


async def test_timeout_ends_the_task(agent: Served) -> None:
    task = await agent.run({"type": "Shell", "command": "echo $$; sleep 1000", "timeout": 0.5})
    assert task["status"] == "ERROR"
    assert "timed out" in task["error"]
    pid = int((await agent.output(task["id"])).strip())
    await eventually(lambda: _async(group_gone(pid)))


async def test_idle_timeout_ends_a_silent_task(agent: Served) -> None:
    task = await agent.run(
        {
            "type": "Python",
            "code": "print('start', flush=True)\nimport time\ntime.sleep(1000)",
            "idle_timeout": 0.5,
        }
    )
    assert task["status"] == "ERROR"
    assert "no output" in task["error"]


async def test_finished_leader_takes_its_leftover_children_with_it(agent: Served) -> None:
    task = await agent.run({"type": "Shell", "command": "sleep 1000 & echo $!"})
    assert task["status"] == "COMPLETED"
    pid = int((await agent.output(task["id"])).strip())
    await eventually(lambda: _async(process_gone(pid)))


async def test_a_process_that_left_the_group_does_not_keep_the_task_alive(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with served(serve, make_settings(tmp_path, kill_grace_seconds=0.5)) as agent:
        # setsid: a new session, out of the task's group, still holding the task's stdout
        task = await agent.run({"type": "Shell", "command": "setsid sleep 1000 & echo $!"})
        escaped = int((await agent.output(task["id"])).strip())
        try:
            assert task["status"] == "COMPLETED"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(escaped, signal.SIGKILL)


async def test_output_past_the_budget_goes_to_a_workspace_file(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with served(serve, make_settings(tmp_path, max_task_output_bytes=1000)) as agent:
        code = "import sys\nfor i in range(2000):\n    sys.stdout.write(f'{i:05d}\\n')\n"
        task = await agent.run({"type": "Python", "code": code})
        assert task["status"] == "COMPLETED"
        assert task["output_truncated"] is True
        assert task["output_bytes"] == 12000
        head = await agent.output(task["id"])
        assert len(head.encode()) == 1000
        notices = await agent.events(task_id=task["id"], type="OutputTruncated")
        assert len(notices) == 1
        rel = notices[0]["detail"]["path"]
        assert notices[0]["detail"]["limit_bytes"] == 1000
        rest = (agent.settings.workspace / rel).read_text()
        assert head + rest == "".join(f"{i:05d}\n" for i in range(2000))
        info = await agent.client.get(f"/file/{rel}")
        assert info.json()["size"] == 11000


async def test_unknown_runnable_is_422_listing_the_known_ones(agent: Served) -> None:
    response = await agent.client.post("/task", json={"runnable": {"type": "Rocket"}})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["known_types"] == ["Ticker", "Shell", "Python"]
    assert "Ticker" in error["msg"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"runnable": {"type": "Shell", "command": "ls", "cwd": "../.."}}, 400),
        ({"runnable": {"type": "Shell", "command": "ls", "cwd": "/etc"}}, 400),
        ({"runnable": {"type": "Shell", "command": "ls", "cwd": "nowhere"}}, 404),
        ({"runnable": {"type": "Shell", "command": ""}}, 422),
        ({"runnable": {"type": "Ticker", "iterations": 0}}, 422),
        ({"runnable": {"type": "Ticker"}, "extra": 1}, 422),
        ({"title": "no runnable"}, 422),
        ({"runnable": {"type": "Shell", "command": "echo \udc00"}}, 422),
        ({"runnable": {"type": "Shell", "command": "true", "env": {"A": "\udc00"}}}, 422),
    ],
)
async def test_bad_task_requests(agent: Served, body: dict[str, Any], status: int) -> None:
    response = await agent.client.post(
        "/task", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert (await agent.client.get("/task")).json()["results"] == []


async def test_cwd_through_a_symlink_out_is_403(agent: Served, tmp_path: Path) -> None:
    os.symlink(tmp_path, agent.settings.workspace / "out")
    response = await agent.client.post(
        "/task", json={"runnable": {"type": "Shell", "command": "ls", "cwd": "out"}}
    )
    assert response.status_code == 403


async def test_task_list_pages_and_filters_by_status(agent: Served) -> None:
    ids = []
    for n in range(5):
        task = await agent.run({"type": "Shell", "command": f"exit {n % 2}"})
        ids.append(task["id"])
    page = (await agent.client.get("/task", params={"limit": 2})).json()
    assert [t["id"] for t in page["results"]] == ids[:2]
    rest = (await agent.client.get("/task", params={"limit": 10, "page_id": page["next_page_id"]})).json()
    assert [t["id"] for t in rest["results"]] == ids[2:]
    assert rest["next_page_id"] is None
    failed = (await agent.client.get("/task", params={"status": "ERROR"})).json()["results"]
    assert [t["id"] for t in failed] == [ids[1], ids[3]]
    both = (await agent.client.get("/task", params=[("status", "ERROR"), ("status", "COMPLETED")])).json()
    assert len(both["results"]) == 5
    assert (await agent.client.get("/task", params={"status": "BOGUS"})).status_code == 422


async def test_tasks_survive_a_restart(serve: Callable[..., Any], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with served(serve, settings) as agent:
        done = await agent.run({"type": "Ticker", "interval": 0, "iterations": 2})
        running = (
            await agent.client.post("/task", json={"runnable": {"type": "Ticker", "interval": 60}})
        ).json()
    async with served(serve, settings) as agent:
        tasks = {t["id"]: t for t in (await agent.client.get("/task")).json()["results"]}
        assert tasks[done["id"]]["status"] == "COMPLETED"
        assert tasks[running["id"]]["status"] == "CANCELLED"  # the graceful shutdown cancelled it
        assert (await statuses(agent, running["id"]))[-1] == "CANCELLED"


async def test_a_task_left_running_by_a_crash_becomes_an_error(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    async with served(serve, settings) as agent:
        task = await agent.run({"type": "Ticker", "interval": 0, "iterations": 1})
    # what a crash leaves: the last record of the task says RUNNING
    record = Task.model_validate(task).model_copy(update={"status": TaskStatus.RUNNING, "finished_at": None})
    append_bytes(settings.state_dir / "tasks.jsonl", record.model_dump_json().encode() + b"\n")
    async with served(serve, settings) as agent:
        reloaded = (await agent.client.get(f"/task/{task['id']}")).json()
        assert reloaded["status"] == "ERROR"
        assert reloaded["error"] == "agent restarted"
        assert (await statuses(agent, task["id"]))[-1] == "ERROR"


async def _async(value: bool) -> bool:
    return value


async def _nonempty(text: Any) -> str | None:
    value = await text
    return value if isinstance(value, str) and value.endswith("\n") else None


async def test_shutdown_cancels_running_process_tasks(serve: Callable[..., Any], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with served(serve, settings) as agent:
        task_id = (
            await agent.client.post(
                "/task", json={"runnable": {"type": "Shell", "command": "echo $$; sleep 1000"}}
            )
        ).json()["id"]
        pid = int(await eventually(lambda: _nonempty(agent.output(task_id))))
    assert group_gone(pid)
    async with served(serve, settings) as agent:
        assert (await agent.client.get(f"/task/{task_id}")).json()["status"] == "CANCELLED"
