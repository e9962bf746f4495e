"""Terminals on the agent: PTY I/O, resize, replay by offset, viewers, exit events, DELETE, retention."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from agent_helpers import Served, make_settings, process_gone, served, ws_headers
from websockets.asyncio.client import ClientConnection

from sandbox_agent.protocol import WS_CLOSE_BAD_QUERY, WS_CLOSE_NOT_FOUND, WS_CLOSE_UNAUTHORIZED
from tests.helpers import eventually
from tests.terminal_helpers import START_JOB, WITHIN, Screen


def terminal_url(agent: Served, terminal_id: str, offset: int | None = None) -> str:
    url = "ws" + agent.url.removeprefix("http") + f"/terminal/{terminal_id}"
    return url if offset is None else f"{url}?offset={offset}"


async def start(agent: Served, **body: Any) -> dict[str, Any]:
    response = await agent.client.post("/terminal", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def attach(agent: Served, terminal_id: str, offset: int | None = None) -> ClientConnection:
    return await websockets.connect(
        terminal_url(agent, terminal_id, offset), additional_headers=ws_headers(), max_size=None
    )


async def test_typed_command_runs_and_output_streams(agent: Served) -> None:
    terminal = await start(agent, command=["/bin/sh"])
    assert terminal["status"] == "RUNNING" and terminal["command"] == ["/bin/sh"]
    async with await attach(agent, terminal["id"]) as ws:
        await ws.send(b"echo $((6 * 7))-ok; tty\n")
        screen = await Screen(ws).shows(b"42-ok")
        await screen.shows(b"/dev/pts/")  # a real PTY, the controlling terminal
    described = (await agent.client.get(f"/terminal/{terminal['id']}")).json()
    assert described["size"] >= len(screen.data) and described["kept_from"] == 0
    listed = (await agent.client.get("/terminal")).json()
    assert [t["id"] for t in listed["results"]] == [terminal["id"]] and listed["next_page_id"] is None


async def test_resize_reaches_the_pty(agent: Served) -> None:
    terminal = await start(agent, command=["/bin/sh"], cols=91, rows=17)
    async with await attach(agent, terminal["id"]) as ws:
        await ws.send(b"stty size\n")
        screen = await Screen(ws).shows(b"17 91")
        await ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        await ws.send(b"stty size\n")
        await screen.shows(b"40 120")
        await ws.send(json.dumps({"type": "resize", "cols": 0}))  # refused, the socket stays
        await screen.until(lambda s: any(c["type"] == "error" for c in s.controls))
    assert (await agent.client.get(f"/terminal/{terminal['id']}")).json()["cols"] == 120


async def test_reconnect_replays_exactly_the_missing_bytes(agent: Served) -> None:
    terminal = await start(agent, command=["/bin/sh"])
    async with await attach(agent, terminal["id"]) as ws:
        await ws.send(b"for i in 1 2 3 4 5; do echo line-$i; done\n")
        first = await Screen(ws).shows(b"line-5\r\n")
    # Output produced while nobody watches is kept too.
    async with await attach(agent, terminal["id"], len(first.data)) as ws:
        await ws.send(b"echo after-$((1 + 1))\n")
        rest = await Screen(ws).shows(b"after-2\r\n")
    whole = first.data + rest.data
    async with await attach(agent, terminal["id"], 0) as ws:
        again = await Screen(ws).until(lambda s: len(s.data) >= len(whole))
    assert again.data[: len(whole)] == whole
    middle = len(whole) // 2
    async with await attach(agent, terminal["id"], middle) as ws:
        tail = await Screen(ws).until(lambda s: len(s.data) >= len(whole) - middle)
    assert tail.data[: len(whole) - middle] == whole[middle:] and not tail.controls


async def test_two_viewers_each_see_everything_and_the_terminal_survives_them(agent: Served) -> None:
    terminal = await start(agent, command=["/bin/sh"])
    one, two = await attach(agent, terminal["id"]), await attach(agent, terminal["id"])
    await one.send(b"echo from-one\n")
    seen_one, seen_two = await Screen(one).shows(b"from-one\r\n"), await Screen(two).shows(b"from-one\r\n")
    await two.send(b"echo from-two\n")
    await seen_one.shows(b"from-two\r\n")
    await seen_two.shows(b"from-two\r\n")
    await one.close()
    await two.close()
    await asyncio.sleep(0)
    described = (await agent.client.get(f"/terminal/{terminal['id']}")).json()
    assert described["status"] == "RUNNING"
    async with await attach(agent, terminal["id"], described["size"]) as ws:
        await ws.send(b"echo still-here\n")
        await Screen(ws).shows(b"still-here\r\n")


async def test_exit_is_an_event_with_the_code_and_ends_the_viewers(agent: Served) -> None:
    terminal = await start(agent, command="echo bye; exit 3")
    async with await attach(agent, terminal["id"]) as ws:
        screen = await Screen(ws).to_the_end()
        assert ws.close_code == 1000
    assert b"bye" in screen.data
    assert screen.controls[-1] == {"type": "exit", "exit_code": 3, "size": len(screen.data)}

    async def exited() -> list[dict[str, Any]]:
        return await agent.events(type="TerminalExited")

    events = await eventually(exited)
    expected = {"type": "TerminalExited", "terminal_id": terminal["id"], "exit_code": 3}
    assert [e["detail"] for e in events] == [expected]
    # The output itself is not in the event log.
    assert not any(b"bye" in json.dumps(e).encode() for e in await agent.events())
    described = (await agent.client.get(f"/terminal/{terminal['id']}")).json()
    assert described["status"] == "EXITED" and described["exit_code"] == 3
    async with await attach(agent, terminal["id"], 0) as ws:  # an exited terminal still replays
        replay = await Screen(ws).to_the_end()
    assert replay.data == screen.data


async def test_delete_ends_the_whole_session(agent: Served) -> None:
    terminal = await start(agent, command=["/bin/sh"])
    async with await attach(agent, terminal["id"]) as ws:
        await ws.send(START_JOB)
        job = await Screen(ws).job()
        deleted = await agent.client.delete(f"/terminal/{terminal['id']}")
        assert deleted.status_code == 200 and deleted.json()["status"] == "EXITED"
        await Screen(ws).to_the_end()
    assert process_gone(job)
    assert (await agent.client.get(f"/terminal/{terminal['id']}")).status_code == 404
    assert not list(agent.settings.terminals_dir.iterdir())


async def test_refusals(agent: Served) -> None:
    terminal = await start(agent, command=["/bin/sh"])
    cases = [
        (terminal_url(agent, terminal["id"], -1), ws_headers(), WS_CLOSE_BAD_QUERY),
        (terminal_url(agent, terminal["id"], 10**9), ws_headers(), WS_CLOSE_BAD_QUERY),
        (terminal_url(agent, "not-a-uuid"), ws_headers(), WS_CLOSE_NOT_FOUND),
        (terminal_url(agent, "00000000-0000-0000-0000-000000000000"), ws_headers(), WS_CLOSE_NOT_FOUND),
        (terminal_url(agent, terminal["id"]), {}, WS_CLOSE_UNAUTHORIZED),
    ]
    for url, headers, code in cases:
        async with websockets.connect(url, additional_headers=headers) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WITHIN)
            assert ws.close_code == code, url
    bad = await agent.client.post("/terminal", json={"cols": 0})
    assert bad.status_code == 422
    missing = await agent.client.post("/terminal", json={"command": ["/no/such/program"]})
    assert missing.status_code == 422 and "/no/such/program" in missing.json()["detail"]


async def test_default_is_a_login_shell(agent: Served) -> None:
    terminal = await start(agent)
    assert terminal["command"][0].startswith("-")
    async with await attach(agent, terminal["id"]) as ws:
        await ws.send(b"echo shell=$0=\n")
        await Screen(ws).shows(b"shell=-")


async def test_an_offset_older_than_what_is_kept_is_said(serve: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, terminal_keep_bytes=4096)
    async with served(serve, settings) as agent:
        assert (await agent.client.get("/agent-info")).json()["limits"]["terminal_keep_bytes"] == 4096
        terminal = await start(agent, command="yes 0123456789abcdef | head -c 200000; echo; echo END")
        async with await attach(agent, terminal["id"]) as ws:
            await Screen(ws).to_the_end()

        async def compacted() -> dict[str, Any] | None:
            info: dict[str, Any] = (await agent.client.get(f"/terminal/{terminal['id']}")).json()
            return info if info["kept_from"] > 0 else None

        info = await eventually(compacted)
        assert info["size"] - info["kept_from"] >= 4096
        spilled = settings.terminals_dir / f"{terminal['id']}.out"
        assert (await asyncio.to_thread(spilled.stat)).st_size <= 2 * 4096
        async with await attach(agent, terminal["id"], 0) as ws:
            replay = await Screen(ws).to_the_end()
    assert replay.controls[0] == {"type": "skipped", "requested": 0, "offset": info["kept_from"]}
    assert len(replay.data) == info["size"] - info["kept_from"] and replay.data.endswith(b"END\r\n")


async def test_stopping_the_agent_ends_its_terminals(serve: Any, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with served(serve, settings) as agent:
        terminal = await start(agent, command=["/bin/sh"])
        async with await attach(agent, terminal["id"]) as ws:
            await ws.send(START_JOB)
            job = await Screen(ws).job()
    assert process_gone(job)


async def test_commands_the_os_cannot_take_are_422(agent: Served) -> None:
    for command in (["sh", "-c", "echo a\u0000b"], [], "", ["sh", "\udc97"], "\ud800"):
        body = json.dumps({"command": command})  # ASCII: lone surrogates as JSON escapes
        response = await agent.client.post(
            "/terminal", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, (command, response.text)
    assert (await agent.client.get("/terminal")).json()["results"] == []


async def test_running_terminals_are_bounded_and_old_exited_ones_forgotten(
    serve: Any, tmp_path: Path
) -> None:
    async with served(serve, make_settings(tmp_path, max_terminals=2)) as agent:
        first, _ = await start(agent, command=["/bin/sh"]), await start(agent, command=["/bin/sh"])
        refused = await agent.client.post("/terminal", json={"command": ["/bin/sh"]})
        assert refused.status_code == 429 and "at most 2" in refused.json()["detail"]
        await agent.client.delete(f"/terminal/{first['id']}")
        for _ in range(3):  # each exits at once: exited ones are kept, the oldest forgotten
            quick = await start(agent, command="true")
            async with await attach(agent, quick["id"]) as ws:
                await Screen(ws).to_the_end()
        await start(agent, command=["/bin/sh"])
        listed = (await agent.client.get("/terminal")).json()["results"]
        statuses = sorted(t["status"] for t in listed)
    assert statuses == ["EXITED", "EXITED", "RUNNING", "RUNNING"]
