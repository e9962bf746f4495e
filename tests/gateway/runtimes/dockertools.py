"""Helpers of the Docker runtime tests: the docker CLI as the independent witness of
what the engine holds, a runtime that leaves nothing behind, and small clients of an
agent's task API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings
from sandbox_agent.protocol import TOKEN_HEADER
from tests.helpers import eventually

FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


def docker(*args: str, check: bool = True) -> str:
    """Run the docker CLI (sync: for fixtures' setup and teardown)."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr}")
    return done.stdout


async def adocker(*args: str) -> str:
    """Run the docker CLI without blocking the loop."""
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {err.decode()}")
    return out.decode()


async def inspect(kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads(await adocker(kind, "inspect", name))[0])


def labelled(label: str) -> dict[str, list[str]]:
    """Containers, volumes and networks carrying ``label`` (``key=value``)."""
    return {
        "containers": docker("ps", "-aq", "--filter", f"label={label}").split(),
        "volumes": docker("volume", "ls", "-q", "--filter", f"label={label}").split(),
        "networks": docker("network", "ls", "-q", "--filter", f"label={label}").split(),
    }


async def alabelled(label: str) -> dict[str, list[str]]:
    return await asyncio.to_thread(labelled, label)


def remove_labelled(label: str) -> None:
    found = labelled(label)
    if found["containers"]:
        docker("rm", "-f", "-v", *found["containers"], check=False)
    if found["volumes"]:
        docker("volume", "rm", "-f", *found["volumes"], check=False)
    if found["networks"]:
        docker("network", "rm", *found["networks"], check=False)


@asynccontextmanager
async def docker_runtime_of(
    settings: Settings, *, sweep_orphans: bool = False
) -> AsyncIterator[DockerRuntime]:
    """A connected DockerRuntime; on the way out it removes every sandbox it holds (with
    ``sweep_orphans``, then whatever of its installation is left without a sandbox), then closes."""
    runtime = await DockerRuntime.connect(settings)
    try:
        yield runtime
    finally:
        try:
            for handle in await runtime.list():
                await runtime.remove(handle.conversation_id)
            if sweep_orphans:
                runtime.orphan_age = 0.0
                await runtime.cleanup_orphans()
        finally:
            await runtime.close()


class Agent:
    """The task API of one agent, straight (with its token) or through the gateway (``prefix``)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, token: str | None = None) -> None:
        self.client = client
        self.base_url = base_url
        self.headers = {TOKEN_HEADER: token} if token else {}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"{self.base_url}{path}", params=params, headers=self.headers)

    async def start_task(self, runnable: dict[str, Any], title: str = "") -> dict[str, Any]:
        response = await self.client.post(
            f"{self.base_url}/task", json={"runnable": runnable, "title": title}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def wait_task(self, task_id: str, within: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            response = await self.get(f"/task/{task_id}")
            assert response.status_code == 200, response.text
            task = dict(response.json())
            if task["status"] in FINAL:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task still {task['status']} after {within:g}s")
            await asyncio.sleep(0.2)

    async def output(self, task_id: str) -> str:
        chunks: list[str] = []
        page_id: str | None = None
        while True:
            params: dict[str, Any] = {"task_id": task_id, "type": "TaskOutput", "limit": 100}
            if page_id:
                params["page_id"] = page_id
            page = (await self.get("/event", **params)).json()
            chunks += [event["detail"]["data"] for event in page["results"]]
            page_id = page.get("next_page_id")
            if not page_id:
                return "".join(chunks)

    async def run(self, runnable: dict[str, Any], within: float = 180.0) -> tuple[dict[str, Any], str]:
        task = await self.start_task(runnable)
        task = await self.wait_task(task["id"], within)
        return task, await self.output(task["id"])

    async def shell(self, command: str | list[str], **options: Any) -> tuple[dict[str, Any], str]:
        return await self.run({"type": "Shell", "command": command, **options})


# Gateway-level helpers: a conversation created through the gateway's HTTP API.


async def create(client: httpx.AsyncClient, base: str, **body: Any) -> str:
    response = await client.post(f"{base}/conversation", json=body)
    assert response.status_code == 201, response.text
    conversation_id = str(response.json()["id"])
    await wait_status(client, base, conversation_id, "READY")
    return conversation_id


async def status(client: httpx.AsyncClient, base: str, conversation_id: str) -> str | None:
    response = await client.get(f"{base}/conversation/{conversation_id}")
    return str(response.json()["status"]) if response.status_code == 200 else None


async def wait_status(client: httpx.AsyncClient, base: str, conversation_id: str, wanted: str) -> None:
    async def reached() -> bool:
        now = await status(client, base, conversation_id)
        assert now != "ERROR" or wanted == "ERROR", (
            await client.get(f"{base}/conversation/{conversation_id}")
        ).text
        return now == wanted

    await eventually(reached, within=180, what=f"conversation {conversation_id} {wanted}")


# Run as root of the sandbox by the engine (a task cannot: its agent is another user's).
_VOLUNTEER = """
import pathlib
for proc in pathlib.Path("/proc").glob("[0-9]*"):
    try:
        if b"sandbox_agent" in (proc / "cmdline").read_bytes():
            (proc / "oom_score_adj").write_text("1000")
            print(proc.name)
    except OSError:
        pass
"""


async def volunteer_agent_for_oom(container: str) -> None:
    """Make the agent of ``container`` the OOM killer's first choice (``docker exec`` as root)."""
    assert (await adocker("exec", "--user", "0", container, "python3", "-c", _VOLUNTEER)).strip()


# Every process forks for ever (failures included): the pids limit holds it, the task's timeout ends it.
FORK_BOMB = {
    "type": "Python",
    "code": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "timeout": 15,
}
MEMORY_HOG = {"type": "Python", "code": "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))\n"}
