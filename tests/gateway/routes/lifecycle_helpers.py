"""Helpers of the pause, snapshot and fork tests: shell commands run to the end, files read back."""

from __future__ import annotations

from typing import Any

import httpx
from gw_helpers import auth

from tests.helpers import eventually

FINAL = ("COMPLETED", "ERROR", "CANCELLED")


async def run(client: httpx.AsyncClient, cid: str, command: str, key: str | None = None) -> dict[str, Any]:
    """Runs ``command`` (Shell) in conversation ``cid`` and waits for it; its final task."""
    created = await client.post(
        f"/conversation/{cid}/task",
        json={"runnable": {"type": "Shell", "command": command}},
        headers=auth(key),
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    async def done() -> dict[str, Any] | None:
        task = (await client.get(f"/conversation/{cid}/task/{task_id}", headers=auth(key))).json()
        return task if task["status"] in FINAL else None

    task = await eventually(done)
    assert task["status"] == "COMPLETED" and task["exit_code"] == 0, task
    return task


async def content(client: httpx.AsyncClient, cid: str, path: str, key: str | None = None) -> bytes | None:
    """The file's bytes, or ``None`` when it does not exist."""
    response = await client.get(f"/conversation/{cid}/file-content/{path}", headers=auth(key))
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.content


async def statuses(client: httpx.AsyncClient, cid: str, key: str | None = None) -> list[str]:
    """The ConversationStatusUpdate statuses of the conversation's log, in order."""
    events = (await client.get(f"/conversation/{cid}/event", headers=auth(key))).json()["results"]
    return [e["detail"]["status"] for e in events if e["detail"]["type"] == "ConversationStatusUpdate"]


async def status_of(client: httpx.AsyncClient, cid: str, key: str | None = None) -> str:
    return str((await client.get(f"/conversation/{cid}", headers=auth(key))).json()["status"])
