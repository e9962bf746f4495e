"""Terminal and stdin scenarios through a gateway, run on each real runtime (process in the fast
suite: routes/test_terminals.py; Docker: runtimes/test_docker_terminals.py)."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
from gw_helpers import USER_KEYS, Harness, auth, close_code, create_ready, keyed, ws_connect
from websockets.asyncio.client import ClientConnection

from sandbox_agent.protocol import WS_CLOSE_NORMAL, WS_CLOSE_NOT_FOUND
from tests.helpers import eventually
from tests.terminal_helpers import Screen

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]


class Conversation:
    def __init__(self, client: httpx.AsyncClient, conversation_id: str) -> None:
        self.client, self.id = client, conversation_id
        self.base = f"/conversation/{conversation_id}"

    async def terminal(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post(f"{self.base}/terminal", json=body, headers=auth(ALICE))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def attach(self, terminal_id: str, offset: int | None = None, key: str = ALICE) -> ClientConnection:
        query = "" if offset is None else f"?offset={offset}"
        return await ws_connect(str(self.client.base_url), f"{self.base}/terminal/{terminal_id}{query}", key)

    async def get(self, path: str) -> Any:
        response = await self.client.get(f"{self.base}{path}", headers=auth(ALICE))
        assert response.status_code == 200, response.text
        return response.json()


async def terminal_session(harness: Harness) -> None:
    """Typed commands run and stream; resize reaches the PTY; reconnecting at 0 and at a middle
    offset replays exactly the missing bytes; two viewers; the terminal outlives them; its exit
    is an event with its code; another user's ids are 404."""
    async with harness.client(**keyed()) as client:
        conversation = Conversation(client, await create_ready(client, ALICE))
        terminal = await conversation.terminal(command=["/bin/sh"], cols=100, rows=30)
        tid = terminal["id"]
        async with await conversation.attach(tid) as ws:
            await ws.send(b"echo $((6 * 7))-ok; stty size\n")
            first = await Screen(ws).shows(rb"42-ok\r\n30 100\r\n")
            await ws.send(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
            await ws.send(b"stty size\n")
            await first.shows(rb"43 132\r\n")
        # Nobody watches: the terminal runs on, and what it prints meanwhile is kept.
        one = await conversation.attach(tid, len(first.data))
        two = await conversation.attach(tid, len(first.data))
        await one.send(b"echo from-$((1 + 1))\n")
        seen_one, seen_two = await Screen(one).shows(rb"from-2\r\n"), await Screen(two).shows(rb"from-2\r\n")
        await two.send(b"exit 7\n")
        seen_one, seen_two = await seen_one.to_the_end(), await seen_two.to_the_end()
        assert one.close_code == two.close_code == WS_CLOSE_NORMAL
        assert seen_one.data == seen_two.data
        assert seen_one.controls[-1] == {
            "type": "exit",
            "exit_code": 7,
            "size": len(first.data + seen_one.data),
        }
        whole = first.data + seen_one.data
        async with await conversation.attach(tid, 0) as ws:
            assert (await Screen(ws).to_the_end()).data == whole
        middle = len(whole) // 2
        async with await conversation.attach(tid, middle) as ws:
            assert (await Screen(ws).to_the_end()).data == whole[middle:]

        async def exited() -> list[dict[str, Any]]:
            page = await conversation.get("/event?type=TerminalExited")
            return [event["detail"] for event in page["results"]]

        assert await eventually(exited) == [{"type": "TerminalExited", "terminal_id": tid, "exit_code": 7}]
        described = await conversation.get(f"/terminal/{tid}")
        assert described["status"] == "EXITED" and described["size"] == len(whole)
        assert [t["id"] for t in (await conversation.get("/terminal"))["results"]] == [tid]
        # Another user: the conversation (and so its terminal) does not exist for them.
        theirs = await conversation.attach(tid, 0, key=BOB)
        assert await close_code(theirs) == WS_CLOSE_NOT_FOUND
        unknown = await conversation.attach("00000000-0000-0000-0000-000000000000")
        assert await close_code(unknown) == WS_CLOSE_NOT_FOUND
        listing = await client.get(f"{conversation.base}/terminal", headers=auth(BOB))
        assert listing.status_code == 404


async def delete_ends_the_group(harness: Harness) -> None:
    """DELETE of a terminal ends its whole process group, even what ignores SIGTERM."""
    marker = f"sleep {random.randint(700_000, 799_999)}"  # a command line no other process has
    async with harness.client() as client:
        conversation = Conversation(client, await create_ready(client))
        tid = (await conversation.terminal(command=["/bin/sh"]))["id"]
        async with await conversation.attach(tid) as ws:
            await ws.send(f"trap '' TERM HUP; {marker} & echo start''ed\n".encode())
            await Screen(ws).shows(rb"started")
            deleted = await client.delete(f"{conversation.base}/terminal/{tid}")
            assert deleted.status_code == 200 and deleted.json()["status"] == "EXITED"
            await Screen(ws).to_the_end()
        assert (await client.get(f"{conversation.base}/terminal/{tid}")).status_code == 404
        # What runs in the sandbox, from /proc (the image has no ps).
        scan = (
            "import os\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try: print(open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
            "    except OSError: pass\n"
        )
        created = await client.post(
            f"{conversation.base}/task", json={"runnable": {"type": "Python", "code": scan}}
        )
        task_id = created.json()["id"]

        async def output() -> str | None:
            task = await conversation.get(f"/task/{task_id}")
            if task["status"] not in ("COMPLETED", "ERROR"):
                return None
            assert task["status"] == "COMPLETED", task
            events = (await conversation.get(f"/event?task_id={task_id}&type=TaskOutput&limit=100"))[
                "results"
            ]
            return "".join(event["detail"]["data"] for event in events)

        listing = await eventually(output)
        assert " -u -" in listing, "the scan sees itself"
        assert marker not in listing


async def stdin_session(harness: Harness) -> None:
    """stdin reaches a ``read`` over HTTP and as a WebSocket frame; eof closes it; 409s and 404."""
    async with harness.client() as client:
        conversation = Conversation(client, await create_ready(client))
        script = "read a; echo got-$a; read b; echo got-$b; cat; echo end"
        created = await client.post(
            f"{conversation.base}/task",
            json={"runnable": {"type": "Shell", "command": script, "stdin": True}},
        )
        task_id = created.json()["id"]
        stdin = f"{conversation.base}/task/{task_id}/stdin"
        written = await client.post(
            stdin, content=b"one\n", headers={"Content-Type": "application/octet-stream"}
        )
        assert written.status_code == 200 and written.json()["written"] == 4, written.text
        async with await ws_connect(str(client.base_url), f"{conversation.base}?after_seq=-1") as ws:
            await ws.send(json.dumps({"stdin": "two\n", "task_id": task_id}))
            await ws.send(json.dumps({"stdin": "three\n", "task_id": task_id, "eof": True}))

            async def finished() -> dict[str, Any] | None:
                task: dict[str, Any] = await conversation.get(f"/task/{task_id}")
                return task if task["status"] in ("COMPLETED", "ERROR") else None

            assert (await eventually(finished))["status"] == "COMPLETED"
        events = (await conversation.get(f"/event?task_id={task_id}&type=TaskOutput"))["results"]
        assert "".join(e["detail"]["data"] for e in events) == "got-one\ngot-two\nthree\nend\n"
        late = await client.post(stdin, content=b"x")
        assert late.status_code == 409 and "COMPLETED" in late.json()["detail"]
        plain = await client.post(
            f"{conversation.base}/task", json={"runnable": {"type": "Shell", "command": "sleep 60"}}
        )
        refused = await client.post(f"{conversation.base}/task/{plain.json()['id']}/stdin", content=b"x")
        assert refused.status_code == 409 and "stdin" in refused.json()["detail"]
        await client.delete(f"{conversation.base}/task/{plain.json()['id']}")
        missing = await client.post(
            f"{conversation.base}/task/00000000-0000-0000-0000-000000000000/stdin", content=b"x"
        )
        assert missing.status_code == 404
