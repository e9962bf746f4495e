"""What the agent tells every gateway's reaper (GET /activity), and STOPPING recorded once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import websockets
from agent_helpers import make_settings, served, ws_headers

from sandbox_agent.protocol import PASSIVE_HEADER, Activity


async def test_requests_count_as_activity_and_the_gateways_own_calls_do_not(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with served(serve, make_settings(tmp_path, conversation_id=uuid4())) as agent:

        async def activity() -> Activity:
            return Activity.model_validate((await agent.client.get("/activity")).json())

        await asyncio.sleep(0.3)
        assert (await activity()).idle_seconds >= 0.3, "asking is no activity"
        for passive in ("/ready", "/health", "/last-seq"):
            await agent.client.get(passive)
        await agent.client.get("/event", headers={PASSIVE_HEADER: "1"})
        assert (await activity()).idle_seconds >= 0.3, "probes and passive calls are no activity"

        await agent.client.get("/event")
        assert (await activity()).idle_seconds < 0.3, "a request is"

        follower = await websockets.connect(agent.ws_url, additional_headers=ws_headers())
        try:
            await asyncio.sleep(0.3)
            during = await activity()
            assert during.connections == 1 and during.idle_seconds == 0, "an open stream keeps it busy"
        finally:
            await follower.close()
        passive = await websockets.connect(
            agent.ws_url, additional_headers=ws_headers() | {PASSIVE_HEADER: "1"}
        )
        try:
            await asyncio.sleep(0.3)
            assert (await activity()).connections == 0, "the firehose's stream is not counted"
        finally:
            await passive.close()


async def test_stopping_is_recorded_once_however_many_gateways_report_it(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    async with served(serve, make_settings(tmp_path, conversation_id=uuid4())) as agent:
        reports = await asyncio.gather(
            *(
                agent.client.post("/status", json={"status": "STOPPING", "reason": f"by {n}"})
                for n in range(3)
            )
        )
        assert sorted(report.status_code for report in reports) == [200, 200, 201]
        assert len({report.json()["seq"] for report in reports}) == 1
        events = await agent.events()
        stops = [event for event in events if event["detail"].get("status") == "STOPPING"]
        assert len(stops) == 1
