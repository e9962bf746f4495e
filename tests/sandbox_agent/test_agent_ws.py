"""The WebSocket: replay then live without gap or duplicate, client frames, slow consumers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from agent_helpers import RawWebSocket, Served, make_settings, served, ws_headers

from sandbox_agent.protocol import WS_CLOSE_TOO_SLOW


async def receive_until(ws: Any, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not done(frames):
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    return frames


async def test_replay_then_live_without_gap_or_duplicate(agent: Served) -> None:
    for n in range(50):
        await agent.client.post("/event", json={"detail": {"type": "Before", "n": n}})

    async def produce() -> None:
        for n in range(200):
            await agent.client.post("/event", json={"detail": {"type": "During", "n": n}})

    producer = asyncio.create_task(produce())  # events arrive while the socket replays
    async with websockets.connect(agent.ws_url + "?after_seq=10", additional_headers=ws_headers()) as ws:
        frames = await receive_until(ws, lambda got: len(got) >= 241)
        await producer
        await ws.send(json.dumps({"detail": {"type": "Last"}}))
        frames += await receive_until(ws, lambda got: len(got) >= 1)
    assert [f["seq"] for f in frames] == list(range(11, 253))
    assert frames[-1]["detail"] == {"type": "Last"}


async def test_default_replays_everything_and_minus_one_is_live_only(agent: Served) -> None:
    await agent.client.post("/event", json={"detail": {"type": "Old"}})
    async with websockets.connect(agent.ws_url, additional_headers=ws_headers()) as ws:
        first = await receive_until(ws, lambda got: len(got) >= 2)
    assert [f["seq"] for f in first] == [1, 2]
    async with websockets.connect(agent.ws_url + "?after_seq=-1", additional_headers=ws_headers()) as ws:
        await agent.client.post("/event", json={"detail": {"type": "New"}})
        live = await receive_until(ws, lambda got: len(got) >= 1)
    assert [(f["seq"], f["detail"]["type"]) for f in live] == [(3, "New")]


async def test_client_frames_create_tasks_and_trigger_events(agent: Served) -> None:
    async with websockets.connect(agent.ws_url + "?after_seq=-1", additional_headers=ws_headers()) as ws:
        await ws.send(
            json.dumps({"runnable": {"type": "Ticker", "interval": 0, "iterations": 2}, "title": "tt"})
        )
        frames = await receive_until(
            ws, lambda got: any(f["detail"].get("status") == "COMPLETED" for f in got)
        )
        kinds = [f["detail"]["type"] for f in frames]
        assert kinds.count("Tick") == 2
        await ws.send(json.dumps({"detail": {"type": "Chat", "text": "hi"}}))
        chat = await receive_until(ws, lambda got: len(got) >= 1)
    assert chat[0]["detail"] == {"type": "Chat", "text": "hi"}
    assert chat[0]["seq"] == frames[-1]["seq"] + 1
    tasks = (await agent.client.get("/task")).json()["results"]
    assert [t["title"] for t in tasks] == ["tt"]


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected"),
        ('{"hello": 1}', "expected"),
        ('{"runnable": {"type": "Rocket"}}', "invalid"),
        ('{"detail": {"type": "Tick"}}', "invalid"),
        ('{"runnable": {"type": "Shell", "command": "ls", "cwd": "../x"}}', "'..'"),
        ('{"detail": {"type": "\\ud800"}}', "invalid"),
        ('{"detail": {"type": "A", "x": "\\udc00"}}', "UTF-8"),
        # Nested past the JSON decoder's recursion limit, and past what the event log encodes.
        ('{"detail": {"type": "A", "x": ' + "[" * 100_000 + "]" * 100_000 + "}}", "deeper than"),
        ("[" * 100_000, "deeper than"),
        ('{"runnable": {"type": "Ticker", "x": ' + "[" * 900 + "]" * 900 + "}}", "deeper than"),
        ('{"detail": {"type": "A", "x": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}}", "deeper than"),
    ],
)
async def test_bad_frames_get_an_error_event_and_the_socket_stays_open(
    agent: Served, frame: str, words: str
) -> None:
    async with websockets.connect(agent.ws_url + "?after_seq=-1", additional_headers=ws_headers()) as ws:
        await ws.send(frame)
        [error] = await receive_until(ws, lambda got: len(got) >= 1)
        assert error["seq"] == 0
        assert error["detail"]["type"] == "Error"
        assert words in error["detail"]["message"]
        if "Rocket" in frame:
            assert error["detail"]["errors"][0]["known_types"] == ["Ticker", "Shell", "Python"]
        await ws.send(json.dumps({"detail": {"type": "StillHere"}}))
        [after] = await receive_until(ws, lambda got: len(got) >= 1)
        assert after["detail"]["type"] == "StillHere"
    assert [e["detail"]["type"] for e in await agent.events()] == ["ConversationStatusUpdate", "StillHere"]


async def test_bad_after_seq_is_refused(agent: Served) -> None:
    for value in ("-2", "abc"):
        async with websockets.connect(
            agent.ws_url + f"?after_seq={value}", additional_headers=ws_headers()
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_slow_consumer_is_closed_4008_and_others_keep_everything(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, subscriber_queue_size=50)
    async with served(serve, settings) as agent:
        slow = await RawWebSocket.connect(
            agent.url, "/ws?after_seq=-1", ws_headers()
        )  # never reads meanwhile
        fast = await websockets.connect(agent.ws_url + "?after_seq=-1", additional_headers=ws_headers())
        try:
            total = 300  # 30 MB: more than the socket buffers between agent and the slow client
            fast_frames: list[int] = []

            async def read_fast() -> None:
                while len(fast_frames) < total:
                    fast_frames.append(json.loads(await asyncio.wait_for(fast.recv(), 60))["seq"])

            reader = asyncio.create_task(read_fast())
            for _ in range(total):
                await agent.client.post("/event", json={"detail": {"type": "Big", "blob": "x" * 100_000}})
            await reader
            assert fast_frames == list(range(2, total + 2))
            # the slow one reads what was buffered, then learns it was dropped
            received = 0
            while True:
                opcode, payload = await asyncio.wait_for(slow.frame(), 60)
                if opcode == 8:
                    break
                received += 1
            assert int.from_bytes(payload[:2], "big") == WS_CLOSE_TOO_SLOW
            assert received < total
        finally:
            await slow.close()
            await fast.close()


async def test_a_consumer_lagging_by_bytes_is_closed_4008_and_resumes_without_loss(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, subscriber_lag_bytes=1024 * 1024)  # events: 10,000 by default
    async with served(serve, settings) as agent:
        slow = await RawWebSocket.connect(agent.url, "/ws?after_seq=-1", ws_headers())  # never reads
        try:
            total = 300  # 30 MB: more than the socket buffers between agent and the slow client
            for _ in range(total):
                await agent.client.post("/event", json={"detail": {"type": "Big", "blob": "x" * 100_000}})
            seqs: list[int] = []
            while True:
                opcode, payload = await asyncio.wait_for(slow.frame(), 60)
                if opcode == 8:
                    break
                if opcode == 1:  # text; not a ping
                    seqs.append(json.loads(payload)["seq"])
            assert int.from_bytes(payload[:2], "big") == WS_CLOSE_TOO_SLOW
            assert seqs == list(range(2, len(seqs) + 2)) and len(seqs) < total
        finally:
            await slow.close()
        async with websockets.connect(
            agent.ws_url + f"?after_seq={seqs[-1]}", additional_headers=ws_headers(), max_size=None
        ) as resumed:
            rest = await receive_until(resumed, lambda got: bool(got) and got[-1]["seq"] == total + 1)
        assert [frame["seq"] for frame in rest] == list(range(seqs[-1] + 1, total + 2))


async def test_shutdown_closes_followers_going_away(serve: Callable[..., Any], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with served(serve, settings) as agent:
        ws = await websockets.connect(agent.ws_url, additional_headers=ws_headers())
        await receive_until(ws, lambda got: len(got) >= 1)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 60)
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
