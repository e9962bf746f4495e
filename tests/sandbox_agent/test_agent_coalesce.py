"""The agent's HTTP protocol sends one loop turn's writes as one, and changes nothing else."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from agent_helpers import TOKEN, served

from sandbox_agent.coalesce import HOLD_LIMIT, CoalescingH11Protocol, CoalescingTransport
from sandbox_agent.protocol import TOKEN_HEADER
from sandbox_agent.settings import AgentSettings


class FakeTransport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def coalescing() -> tuple[FakeTransport, CoalescingTransport]:
    real = FakeTransport()
    return real, CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_the_writes_of_one_turn_leave_in_one_write_at_its_end() -> None:
    real, transport = coalescing()
    transport.write(b"HTTP/1.1 201 Created\r\n\r\n")
    transport.write(b"")
    transport.write(memoryview(b"first line\n"))
    assert real.writes == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 201 Created\r\n\r\nfirst line\n")
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 201 Created\r\n\r\nfirst line\n"]
    transport.write(b"later")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"later"]


async def test_a_large_write_is_not_held() -> None:
    real, transport = coalescing()
    transport.write(b"head")
    transport.write(b"x" * HOLD_LIMIT)
    assert real.writes == [b"head" + b"x" * HOLD_LIMIT]
    await asyncio.sleep(0)
    assert len(real.writes) == 1


async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    real, transport = coalescing()
    transport.write(b"end of body")
    transport.close()
    assert real.writes == [b"end of body"] and real.closing
    transport.write(b"after close")
    await asyncio.sleep(0)
    assert real.writes == [b"end of body"]

    real, transport = coalescing()
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert real.writes == [] and real.aborted
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the real one's


async def test_the_agent_served_with_it_streams_tasks_and_upgrades_websockets(
    serve: Any, settings: AgentSettings
) -> None:
    async with served(serve, settings, http=CoalescingH11Protocol) as agent:
        for command, code in (("echo hi", 0), ("echo oops >&2; exit 3", 3)):
            body = {"runnable": {"type": "Shell", "command": command}}
            answer = await agent.client.post("/task", params={"wait": "true"}, json=body)
            assert answer.status_code == 201, answer.text
            records = [json.loads(line) for line in answer.text.splitlines()]
            assert records[0]["type"] == "task" and records[-1]["task"]["exit_code"] == code
            statuses = [r["event"]["detail"].get("status") for r in records if r["type"] == "event"]
            assert statuses[0] == "PENDING" and statuses[-1] in ("COMPLETED", "ERROR")
        refused = await agent.client.post("/task", params={"wait": "true"}, json={"runnable": {}})
        assert refused.status_code == 422 and "detail" in refused.json()
        ws_url = agent.url.replace("http://", "ws://") + "/ws?after_seq=0"
        async with websockets.connect(ws_url, additional_headers={TOKEN_HEADER: TOKEN}) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["seq"] == 1
