"""A spare agent (sandbox_agent.claim): no conversation until claimed, only /ready and /claim
answer, the claim authenticated with the spare's secret; a claimed agent stays claimed across
restarts and takes no second claim; its log starts with the claimed conversation's READY."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import websockets
from agent_helpers import make_settings, served

from sandbox_agent.protocol import CLAIM_SECRET_HEADER, TOKEN_HEADER

SECRET = "the-spare-claim-secret"


def claim_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation_id": str(uuid4()),
        "token": "the-conversation-token-0123",
        "owner": "alice",
        "title": "claimed",
        "created_at": datetime.now(UTC).isoformat(),
        "env": {"GREETING": "hello"},
    }
    return body | overrides


async def test_a_spare_refuses_everything_but_ready_and_its_claim(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, token=SECRET, spare=True, claim_file=tmp_path / "claim.json")
    async with served(serve, settings) as agent:
        client = agent.client
        assert (await client.get("/ready")).status_code == 200
        for headers in ({}, {TOKEN_HEADER: SECRET}):
            for method, path in (("GET", "/health"), ("GET", "/event"), ("POST", "/task"), ("GET", "/file/")):
                answer = await client.request(method, path, headers=headers, json={})
                assert answer.status_code in (401, 403), (method, path, answer.status_code)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with websockets.connect(agent.ws_url, additional_headers={TOKEN_HEADER: SECRET}) as ws:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        body = claim_body()
        assert (await client.post("/claim", json=body)).status_code == 401
        assert (
            await client.post("/claim", json=body, headers={CLAIM_SECRET_HEADER: "wrong"})
        ).status_code == 401
        assert not (tmp_path / "claim.json").exists()

        claimed = await client.post("/claim", json=body, headers={CLAIM_SECRET_HEADER: SECRET})
        assert claimed.status_code == 201, claimed.text
        assert claimed.json()["seq"] == 1 and claimed.json()["detail"]["status"] == "READY"
        again = await client.post("/claim", json=claim_body(), headers={CLAIM_SECRET_HEADER: SECRET})
        assert again.status_code == 409

        token = {TOKEN_HEADER: body["token"]}
        assert (await client.get("/event", headers={TOKEN_HEADER: SECRET})).status_code == 401
        events = (await client.get("/event", headers=token)).json()["results"]
        assert [(e["seq"], e["conversation_id"]) for e in events] == [(1, body["conversation_id"])]
        info = (await client.get("/agent-info", headers=token)).json()
        assert info["conversation_id"] == body["conversation_id"]
        task = await client.post(
            "/task", json={"runnable": {"type": "Shell", "command": 'printf "$GREETING"'}}, headers=token
        )
        assert task.status_code == 201
    kept = tmp_path / "claim.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o400
    assert json.loads(kept.read_text())["conversation_id"] == body["conversation_id"]

    # Started again (still told it is a spare): it is the claimed conversation's agent.
    settings = make_settings(tmp_path, token=SECRET, spare=True, claim_file=kept)
    async with served(serve, settings) as agent:
        token = {TOKEN_HEADER: body["token"]}
        events = (await agent.client.get("/event", headers=token)).json()["results"]
        assert events[0]["seq"] == 1 and events[0]["conversation_id"] == body["conversation_id"]
        refused = await agent.client.post("/claim", json=claim_body(), headers={CLAIM_SECRET_HEADER: SECRET})
        assert refused.status_code == 409
        assert (await agent.client.get("/health")).status_code == 200


async def test_a_spare_made_for_one_id_takes_no_claim_for_another(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    made_for = uuid4()
    settings = make_settings(tmp_path, token=SECRET, spare=True, conversation_id=made_for)
    async with served(serve, settings) as agent:
        other = await agent.client.post("/claim", json=claim_body(), headers={CLAIM_SECRET_HEADER: SECRET})
        assert other.status_code == 409
        mine = claim_body(conversation_id=str(made_for))
        assert (
            await agent.client.post("/claim", json=mine, headers={CLAIM_SECRET_HEADER: SECRET})
        ).status_code == 201


async def test_an_agent_that_is_no_spare_takes_no_claim(serve: Callable[..., Any], tmp_path: Path) -> None:
    async with served(serve, make_settings(tmp_path)) as agent:
        answer = await agent.client.post("/claim", json=claim_body(), headers={CLAIM_SECRET_HEADER: SECRET})
        assert answer.status_code == 409
        async with httpx.AsyncClient(base_url=agent.url) as anonymous:
            assert (await anonymous.post("/claim", json=claim_body())).status_code == 409
