"""WS /firehose/: every event of every conversation once, to every admin client,
conversations created after connecting included, one upstream per conversation (both
runtimes);
a slow client is dropped with 4008 without slowing the others."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gw_helpers import Harness, create_ready, recv_until, ws_connect
from gw_stalled import stalled_close_code, stalled_websocket

from sandbox_agent.protocol import WS_CLOSE_TOO_SLOW
from tests.helpers import eventually


def _marker(name: str) -> Any:
    return lambda frame: frame["detail"].get("type") == "marker" and frame["detail"].get("name") == name


async def test_firehose_sees_every_conversation_once(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        url = str(client.base_url)
        first, second = await create_ready(client), await create_ready(client)
        one = await ws_connect(url, "/firehose/")
        two = await ws_connect(url, "/firehose/")
        for cid in (first, second):
            await client.post(f"/conversation/{cid}/event", json={"detail": {"type": "marker", "name": cid}})

        # Created while the firehose listens: its STARTING frames and READY (seq 1) come too.
        created = await client.post("/conversation", json={"title": "late"})
        third = created.json()["id"]
        for ws in (one, two):
            frames = await recv_until(ws, lambda f: f["conversation_id"] == third and f["seq"] == 1)
            assert frames[-1]["detail"]["status"] == "READY"
            assert any(f["conversation_id"] == third and f["seq"] == 0 for f in frames), "STARTING frames"
        await client.post(f"/conversation/{third}/event", json={"detail": {"type": "marker", "name": "end"}})

        for ws in (one, two):
            frames = await recv_until(ws, _marker("end"))
            stored = [(f["conversation_id"], f["seq"]) for f in frames if f["seq"] > 0]
            assert len(stored) == len(set(stored)), "each event once"
        assert len(any_harness.gateway.firehose._upstreams) == 3, "one upstream per conversation"
        await one.close()
        await two.close()

        async def upstreams_closed() -> bool:
            return not any_harness.gateway.firehose._upstreams

        await eventually(upstreams_closed)


async def test_slow_firehose_client_is_dropped_and_others_go_on(harness: Harness) -> None:
    async with harness.client(firehose_queue_size=1000) as client:
        url = str(client.base_url)
        cid = await create_ready(client)
        slow = stalled_websocket(url, "/firehose/")
        fast = await ws_connect(url, "/firehose/")

        async def both_listen() -> bool:
            return len(harness.gateway.firehose._clients) == 2

        await eventually(both_listen)
        iterations = 10_000
        runnable = {"type": "Ticker", "interval": 0, "iterations": iterations, "message": "x" * 1000}
        task = await client.post(f"/conversation/{cid}/task", json={"runnable": runnable})
        assert task.status_code == 201, task.text

        ticks: list[int] = []
        while len(ticks) < iterations:
            frame = json.loads(await asyncio.wait_for(fast.recv(), 60))
            if frame["detail"].get("type") == "Tick":
                ticks.append(frame["detail"]["iteration"])
        assert ticks == list(range(1, iterations + 1)), "the fast client got everything, in order"
        await fast.close()

        assert await stalled_close_code(slow) == WS_CLOSE_TOO_SLOW
