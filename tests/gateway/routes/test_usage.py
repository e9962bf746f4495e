"""``GET /conversation/{id}/usage`` through the gateway, on the process runtime (a real
agent process measured from /proc): it moves when a task burns CPU and memory, it is the
owner's (and admins') only, and OpenAPI documents it."""

from __future__ import annotations

from typing import Any

from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, auth, create_ready, keyed

from tests.helpers import eventually

_BURN = (
    "import time\n"
    "end = time.process_time() + 0.5\n"
    "while time.process_time() < end:\n"
    "    pass\n"
    "held = bytearray(48 * 1024 * 1024)\n"
    "for at in range(0, len(held), 4096):\n"
    "    held[at] = 1\n"
    "time.sleep(120)\n"
)


async def test_usage_moves_with_a_busy_task_and_is_the_owners(process_harness: Harness) -> None:
    alice = USER_KEYS["alice"]
    async with process_harness.client(**keyed()) as client:
        cid = await create_ready(client, alice)
        first = await client.get(f"/conversation/{cid}/usage", headers=auth(alice))
        assert first.status_code == 200, first.text
        idle = first.json()
        assert idle["runtime"] == "process" and idle["conversation_id"] == cid
        assert idle["network_rx_bytes"] is None and idle["disk_bytes"] == 0 and idle["pids"] >= 1
        task = {"runnable": {"type": "Python", "code": _BURN}}
        assert (
            await client.post(f"/conversation/{cid}/task", json=task, headers=auth(alice))
        ).status_code == 201

        async def busy() -> dict[str, Any] | None:
            now = (await client.get(f"/conversation/{cid}/usage", headers=auth(alice))).json()
            moved = (
                now["cpu_seconds"] - idle["cpu_seconds"] >= 0.4
                and now["memory_bytes"] - idle["memory_bytes"] >= 40 * 1024 * 1024
                and now["pids"] > idle["pids"]
            )
            return now if moved else None

        busy_now = await eventually(busy, what="usage moves while the task burns")
        assert busy_now["memory_peak_bytes"] >= busy_now["memory_bytes"]
        assert (await client.get(f"/conversation/{cid}/usage", headers=auth(ADMIN_KEY))).status_code == 200
        other = await client.get(f"/conversation/{cid}/usage", headers=auth(USER_KEYS["bob"]))
        assert other.status_code == 404 and "not found" in other.json()["detail"]
        assert (await client.get(f"/conversation/{cid}/usage")).status_code == 401
        assert (await client.get("/conversation/not-a-uuid/usage", headers=auth(alice))).status_code == 422
        document = (await client.get("/openapi.json")).json()
        operation = document["paths"]["/conversation/{conversation_id}/usage"]["get"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ConversationUsage"
        }
        assert "memory_peak_bytes" in document["components"]["schemas"]["ConversationUsage"]["properties"]
        assert "/metrics" in document["paths"]
