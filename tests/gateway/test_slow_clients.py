"""Clients that stop reading cost the gateway bounded memory, and it is given back.

A real gateway subprocess (process runtime) is measured (resident memory, from
/proc) before, during and after several stalled WebSocket readers while large
events flow; a stalled follower is closed with 4008 and misses nothing when it
resumes with after_seq; WebSockets per principal are capped (4429)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
import websockets
from gw_helpers import (
    ADMIN_KEY,
    TIMEOUT,
    USER_KEYS,
    Harness,
    create_ready,
    eventually,
    keyed,
    recv_json,
    recv_until,
    ws_connect,
)
from gw_process import gateway_env, gateway_process, gateway_up
from gw_stalled import stalled_frames, stalled_websocket
from process_agents import kill_agents

from sandbox_agent.protocol import WS_CLOSE_LIMIT_REACHED, WS_CLOSE_TOO_SLOW
from tests.conftest import free_port

MiB = 1024 * 1024
#: Stalled readers at once, and what flows to each of them.
READERS = 4
EVENT_BYTES = 512 * 1024
EVENTS = 240  # 120 MiB per reader: far more than any bound, and than the sockets' kernel buffers
#: What one stalled reader may cost the gateway at most (its bound is ws_send_buffer_bytes, 4 MiB).
PER_READER = 20 * MiB
#: "Back near the baseline" once the readers are gone.
SLACK = 20 * MiB


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (tiny and local: fine from a coroutine)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def accepted(sock: socket.socket) -> None:
    """Waits until the server answered a :func:`stalled_websocket`'s handshake (peeking: the
    bytes stay for whoever reads the socket later)."""

    async def answered() -> bool:
        try:
            return b"\r\n\r\n" in sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False

    await eventually(answered)


async def big_events(client: httpx.AsyncClient, cid: str, count: int, size: int) -> None:
    for n in range(count):
        detail = {"type": "big", "n": n, "blob": "x" * size}
        answer = await client.post(f"/conversation/{cid}/event", json={"detail": detail})
        assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("path", ["/conversation/{cid}", "/firehose/"])
async def test_stalled_readers_cost_bounded_memory_given_back_after(
    path: str, tmp_path: Path, agent_env: dict[str, str]
) -> None:
    port, state = free_port(), tmp_path / "state"
    url = f"http://127.0.0.1:{port}"
    try:
        async with (
            gateway_process(
                gateway_env(agent_env, port, state, install="slowtest"), tmp_path / "gateway.log"
            ) as gateway,
            httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
        ):
            await gateway_up(client)
            cid = await create_ready(client)
            await big_events(client, cid, 8, EVENT_BYTES)  # the HTTP path warmed up: part of the baseline
            baseline = rss(gateway.pid)

            readers = [stalled_websocket(url, path.format(cid=cid)) for _ in range(READERS)]
            for reader in readers:
                await accepted(reader)
            peak = baseline

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss(gateway.pid))
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            try:
                await big_events(client, cid, EVENTS, EVENT_BYTES)
                await asyncio.sleep(1)  # what is in flight lands somewhere
            finally:
                watcher.cancel()
            growth = peak - baseline
            assert growth < READERS * PER_READER, f"{growth / MiB:.0f} MiB for {READERS} stalled readers"

            for reader in readers:
                reader.close()

            async def given_back() -> int | None:
                now = rss(gateway.pid)
                return now if now < baseline + SLACK else None

            try:
                await eventually(given_back, within=30)
            except AssertionError:
                now = rss(gateway.pid)
                raise AssertionError(
                    f"RSS {now / MiB:.0f} MiB after the readers left; baseline {baseline / MiB:.0f} MiB"
                ) from None
    finally:
        kill_agents(state)


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the kernel still holds the server's end of a loopback connection (IPv4)."""
    wanted = (f":{server_port:04X}", f":{client_port:04X}")
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            local, remote = line.split()[1:3]
            if (local[-5:], remote[-5:]) == wanted:
                return True
    return False


async def test_the_gateway_lets_go_of_a_reader_that_never_reads(
    tmp_path: Path, agent_env: dict[str, str]
) -> None:
    """Stalled, closed 4008 (a close it never takes), then dropped by the kernel: nothing
    the gateway buffered for it outlives ``tcp_user_timeout``."""
    port, state = free_port(), tmp_path / "state"
    url = f"http://127.0.0.1:{port}"
    quick = {"ws_stall_timeout": "1", "ws_close_timeout": "1", "tcp_user_timeout": "2"}
    try:
        async with (
            gateway_process(
                gateway_env(agent_env, port, state, install="slowtest", **quick), tmp_path / "gateway.log"
            ),
            httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client,
        ):
            await gateway_up(client)
            cid = await create_ready(client)
            stalled = stalled_websocket(url, f"/conversation/{cid}")
            await accepted(stalled)
            client_port = stalled.getsockname()[1]
            assert server_side_open(port, client_port)
            await big_events(client, cid, 60, EVENT_BYTES)  # 30 MiB: the window shuts

            async def let_go() -> bool:
                return not server_side_open(port, client_port)

            await eventually(let_go)
            stalled.close()
    finally:
        kill_agents(state)


async def test_a_stalled_follower_is_closed_too_slow_and_resumes_without_loss(harness: Harness) -> None:
    # A close timeout longer than the test: the close frame waits for the reader, whenever it reads.
    stall = 0.5
    overrides = {
        "ws_send_buffer_bytes": 256 * 1024,
        "ws_stall_timeout": stall,
        "ws_close_timeout": TIMEOUT * 2,
    }
    async with harness.client(**overrides) as client:
        url = str(client.base_url)
        cid = await create_ready(client)
        stalled = stalled_websocket(url, f"/conversation/{cid}")
        await accepted(stalled)
        count, size = 200, 200_000  # 40 MB: far more than the buffers on the way (kernel's included)
        await big_events(client, cid, count, size)
        await asyncio.sleep(stall * 4)  # not a byte read for longer than the stall timeout

        frames, code = await stalled_frames(stalled)
        assert code == WS_CLOSE_TOO_SLOW
        seqs = [frame["seq"] for frame in frames]
        assert seqs == list(range(1, len(seqs) + 1)), "a gapless prefix"
        last_seq = count + 1  # READY is seq 1
        assert len(seqs) < last_seq, "closed before the end"

        resumed = await ws_connect(url, f"/conversation/{cid}?after_seq={seqs[-1]}")
        rest = await recv_until(resumed, lambda frame: frame["seq"] == last_seq)
        await resumed.close()
        assert [frame["seq"] for frame in rest] == list(range(seqs[-1] + 1, last_seq + 1))
        assert [frame["detail"]["n"] for frame in rest] == list(range(seqs[-1] - 1, count))


async def test_websockets_per_principal_are_capped(harness: Harness) -> None:
    alice, bob = USER_KEYS["alice"], USER_KEYS["bob"]
    async with harness.client(**keyed(max_websockets_per_principal=2)) as client:
        url = str(client.base_url)
        mine, theirs = await create_ready(client, alice), await create_ready(client, bob)
        held = [await ws_connect(url, f"/conversation/{mine}", alice) for _ in range(2)]
        for ws in held:
            await recv_json(ws)  # READY: the relay runs

        refused = await ws_connect(url, f"/conversation/{mine}", alice)
        error = await recv_json(refused)
        assert error["seq"] == 0 and error["detail"]["type"] == "Error"
        assert "2" in error["detail"]["message"] and "WebSockets" in error["detail"]["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(refused.recv(), TIMEOUT)
        assert refused.close_code == WS_CLOSE_LIMIT_REACHED

        other = await ws_connect(url, f"/conversation/{theirs}", bob)  # another principal: its own count
        assert (await recv_json(other))["seq"] == 1
        admin = await ws_connect(url, "/firehose/", ADMIN_KEY)

        await held.pop().close()

        async def reopened() -> bool:
            ws = await ws_connect(url, f"/conversation/{mine}", alice)
            frame = await recv_json(ws)
            await ws.close()
            return bool(frame["seq"] == 1)

        await eventually(reopened)  # a closed socket frees its place
        for ws in (*held, other, admin):
            await ws.close()
