"""A full disk under the event log: 507 with a JSON body, nothing torn, writing again once space is back."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from agent_helpers import TOKEN, served, ws_headers

from sandbox_agent import journal
from sandbox_agent.app import create_app
from sandbox_agent.events import JSONL_NAME
from sandbox_agent.protocol import TOKEN_HEADER
from sandbox_agent.settings import AgentSettings
from tests.helpers import eventually


class FullDisk:
    """Stands in for the journal's write: while ``full``, writes half the batch, then ENOSPC."""

    def __init__(self) -> None:
        self.full = True
        self.failures = 0
        self._real = journal.write_all

    def __call__(self, fd: int, data: bytes) -> None:
        if self.full:
            self.failures += 1
            os.write(fd, data[: len(data) // 2])  # a torn line, as a real full disk leaves it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._real(fd, data)


def note(n: int) -> dict[str, Any]:
    return {"detail": {"type": "note", "n": n}}


async def test_a_full_disk_is_507_and_the_log_stays_whole_and_resumes(
    serve: Callable[..., Any], settings: AgentSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings)
    log = app.state.agent.events
    disk = FullDisk()
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url, headers={TOKEN_HEADER: TOKEN}, timeout=60) as client,
    ):
        assert (await client.post("/event", json=note(1))).status_code == 201
        await log.flush()
        monkeypatch.setattr(journal, "write_all", disk)
        # Accepted before the write fails: it keeps its seq and reaches the file later.
        assert (await client.post("/event", json=note(2))).status_code == 201
        await log.flush()  # returns once the write failed
        assert disk.failures >= 1

        refused = await client.post("/event", json=note(3))
        assert refused.status_code == 507, refused.text
        assert "no space left on device" in refused.json()["detail"]
        ticker = {"runnable": {"type": "Ticker", "iterations": 1, "interval": 0}}
        task = await client.post("/task", json=ticker)
        assert task.status_code == 507, task.text
        assert (await client.get("/task")).json()["results"] == []  # nothing was started
        async with websockets.connect(
            url.replace("http", "ws") + "/ws?after_seq=-1", additional_headers=ws_headers()
        ) as ws:
            await ws.send(json.dumps(note(3)))
            error = json.loads(await ws.recv())
            assert error["seq"] == 0 and "no space left on device" in error["detail"]["message"]

        # Reads still answer everything accepted, in order; the file holds no torn line.
        listed = (await client.get("/event")).json()["results"]
        assert [e["seq"] for e in listed] == [1, 2, 3]
        assert [e["detail"].get("n") for e in listed] == [None, 1, 2]
        data = (settings.state_dir / JSONL_NAME).read_bytes()
        assert data.endswith(b"\n") and len(data.splitlines()) == 2

        disk.full = False  # space is back: the retry writes the queued event, appends are taken again

        async def accepted() -> httpx.Response | None:
            response = await client.post("/event", json=note(4))
            return response if response.status_code == 201 else None

        assert (await eventually(accepted)).json()["seq"] == 4

    async with served(serve, settings) as again:  # the file reloads whole and gapless
        events = await again.events()
        assert [e["seq"] for e in events] == [1, 2, 3, 4]
        assert [e["detail"].get("n") for e in events] == [None, 1, 2, 4]
