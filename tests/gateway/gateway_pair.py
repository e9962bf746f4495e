"""Two real gateway processes serving one installation (uvicorn on loopback, as ``convoy-gateway``
runs it): what tests/gateway/test_several_gateways.py and its Docker twin drive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from gw_helpers import ADMIN_KEY, TIMEOUT, USER_KEYS, auth
from gw_process import gateway_process, gateway_up

from tests.helpers import eventually, free_port

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]
ADMIN = ADMIN_KEY
#: Settings of every pair: keys on (owners matter), and a short sync so tests stay quick.
PAIR_SETTINGS = {
    "api_keys": ",".join(f"{name}:{key}" for name, key in USER_KEYS.items()),
    "admin_keys": ADMIN_KEY,
    "sync_interval": "0.5",
    "preview_secret": "one-secret-for-both-gateways",
}


@dataclass
class Gateway:
    name: str
    base: str
    client: httpx.AsyncClient
    process: asyncio.subprocess.Process
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.asynccontextmanager
async def gateway_pair(
    env_of: Callable[[int], dict[str, str]], logs: Path
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Gateways "a" and "b" with the environments ``env_of(port)`` (the same installation);
    both answer /health when it yields; killed on the way out if still running."""
    async with contextlib.AsyncExitStack() as stack:
        pair: list[Gateway] = []
        for name in ("a", "b"):
            port = free_port()
            log = logs / f"gateway-{name}.log"
            process = await stack.enter_async_context(gateway_process(env_of(port), log))
            base = f"http://127.0.0.1:{port}"
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=TIMEOUT))
            pair.append(Gateway(name, base, client, process, log))
        await asyncio.gather(*(gateway_up(gateway.client) for gateway in pair))
        yield pair[0], pair[1]


def no_tracebacks(*gateways: Gateway) -> None:
    """No gateway logged an unexpected error (a 500, a failed round, a task that crashed)."""
    for gateway in gateways:
        text = gateway.log_text()
        assert "Traceback" not in text, f"gateway {gateway.name} logged an error:\n{text[-4000:]}"


async def create(gateway: Gateway, key: str, **body: Any) -> httpx.Response:
    return await gateway.client.post("/conversation", json=body, headers=auth(key))


async def status_of(gateway: Gateway, key: str, conversation_id: str) -> str | None:
    """Its status through ``gateway``; ``None`` for 404."""
    response = await gateway.client.get(f"/conversation/{conversation_id}", headers=auth(key))
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def until_status(gateway: Gateway, key: str, conversation_id: str, wanted: str | None) -> None:
    async def reached() -> bool:
        return await status_of(gateway, key, conversation_id) == wanted

    await eventually(reached, what=f"{conversation_id} {wanted} through gateway {gateway.name}")


async def listed(gateway: Gateway) -> set[str]:
    """The ids of the conversations ``gateway`` lists (admin)."""
    page = (await gateway.client.get("/conversation", params={"limit": 100}, headers=auth(ADMIN))).json()
    return {str(conversation["id"]) for conversation in page["results"]}


async def trigger(gateway: Gateway, key: str, conversation_id: str, kind: str) -> int:
    """Posts a custom event through ``gateway``; the answer's status code."""
    response = await gateway.client.post(
        f"/conversation/{conversation_id}/event", json={"detail": {"type": kind}}, headers=auth(key)
    )
    return response.status_code


async def event_types(gateway: Gateway, key: str, conversation_id: str) -> list[str]:
    response = await gateway.client.get(
        f"/conversation/{conversation_id}/event", params={"limit": 100}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return [str(event["detail"]["type"]) for event in response.json()["results"]]
