"""The seed's browser flow, over a real gateway and real agents: WS /conversation/
says STARTING then READY; a Ticker task created by HTTP and one created by a
WebSocket frame both tick to the follower."""

from __future__ import annotations

import httpx
from gw_helpers import Harness, is_status, recv_json, recv_until, task_finished, ws_connect


async def test_seed_flow_over_ws_create(any_harness: Harness) -> None:
    async with any_harness.serve() as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        ws = await ws_connect(url, "/conversation?title=seed")  # the path as the seed writes it
        try:
            first = await recv_json(ws)
            assert first["seq"] == 0
            assert first["detail"]["type"] == "ConversationStatusUpdate"
            assert first["detail"]["status"] == "STARTING"
            frames = await recv_until(ws, is_status("READY"))
            starting = [f for f in frames[:-1] if is_status("STARTING")(f)]
            assert all(f["seq"] == 0 for f in starting)
            ready = frames[-1]
            conversation_id = ready["detail"]["conversation_id"]
            assert ready["conversation_id"] == conversation_id == first["conversation_id"]
            assert ready["seq"] == 1  # the agent's own READY, from its log

            info = (await client.get(f"/conversation/{conversation_id}")).json()
            assert info["status"] == "READY" and info["title"] == "seed"

            # As the seed's first snippet: a Ticker created over HTTP.
            created = await client.post(
                f"/conversation/{conversation_id}/task",
                json={
                    "runnable": {"type": "Ticker", "interval": 0.01, "iterations": 3},
                    "title": "Tickety Tock!",
                },
            )
            assert created.status_code == 201, created.text
            http_task = created.json()["id"]
            frames = await recv_until(ws, task_finished(http_task))
            ticks = [f["detail"] for f in frames if f["detail"]["type"] == "Tick"]
            assert [t["iteration"] for t in ticks if t["task_id"] == http_task] == [1, 2, 3]

            # As the seed's second snippet: a Ticker created by a WebSocket frame.
            await ws.send(
                '{"runnable": {"type": "Ticker", "interval": 0.01, "iterations": 2}, "title": "ws"}'
            )
            frames = await recv_until(ws, lambda f: f["detail"]["type"] == "Tick")
            ws_task = frames[-1]["detail"]["task_id"]
            assert ws_task != http_task
            frames += await recv_until(ws, task_finished(ws_task))
            assert [f["detail"]["iteration"] for f in frames if f["detail"]["type"] == "Tick"] == [1, 2]
            seqs = [f["seq"] for f in frames]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        finally:
            await ws.close()
        assert (await client.delete(f"/conversation/{conversation_id}")).status_code == 204
