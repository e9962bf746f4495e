"""``GET /claim`` (sandbox_agent.routes.claim): an agent started as a spare tells the holder of
its claim secret what it is (a spare, or the claim it serves), before and after the claim and
across a restart (in process and through the CLI, which reads the claim as root); nobody else,
and no agent started as no spare, learns anything; a claim under way is waited for."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_helpers import make_settings, served
from test_agent_cli import agent_process, clean_env, wait_ready
from test_agent_spare import SECRET, claim_body

from sandbox_agent import agent as agent_module
from sandbox_agent.app import create_app
from sandbox_agent.claim import Claim, ClaimState, write_claim
from sandbox_agent.protocol import CLAIM_SECRET_HEADER, TOKEN_HEADER

ASK = {CLAIM_SECRET_HEADER: SECRET}


async def state_of(client: httpx.AsyncClient, headers: dict[str, str]) -> ClaimState:
    answer = await client.get("/claim", headers=headers)
    assert answer.status_code == 200, answer.text
    return ClaimState.model_validate_json(answer.content)


async def test_a_spare_says_what_it_is_to_its_secret_alone(serve: Callable[..., Any], tmp_path: Path) -> None:
    kept = tmp_path / "claim.json"
    settings = make_settings(tmp_path, token=SECRET, spare=True, claim_file=kept)
    body = claim_body()
    async with served(serve, settings) as agent:
        client = agent.client
        for refused in ({}, {CLAIM_SECRET_HEADER: "wrong"}, {TOKEN_HEADER: SECRET}):
            answer = await client.get("/claim", headers=refused)
            assert answer.status_code == 401, (refused, answer.text)
            assert "detail" in answer.json()
        assert (await state_of(client, ASK)).claim is None

        assert (await client.post("/claim", json=body, headers=ASK)).status_code == 201
        claim = (await state_of(client, ASK)).claim
        assert claim is not None
        assert (str(claim.conversation_id), claim.token, claim.owner) == (
            body["conversation_id"],
            body["token"],
            "alice",
        )
        # The conversation's token is no claim secret: the claim (which holds it) is not told.
        assert (await client.get("/claim", headers={CLAIM_SECRET_HEADER: body["token"]})).status_code == 401

    # Started again, the agent reads its claim back and still answers to the spare's secret.
    async with served(serve, make_settings(tmp_path, token=SECRET, spare=True, claim_file=kept)) as agent:
        again = (await state_of(agent.client, ASK)).claim
        assert again is not None and str(again.conversation_id) == body["conversation_id"]


async def test_an_agent_started_as_no_spare_answers_no_one(serve: Callable[..., Any], tmp_path: Path) -> None:
    async with served(serve, make_settings(tmp_path)) as agent:
        for headers in ({}, {CLAIM_SECRET_HEADER: SECRET}, {CLAIM_SECRET_HEADER: ""}):
            assert (await agent.client.get("/claim", headers=headers)).status_code == 401


async def test_a_claim_under_way_is_waited_for(
    serve: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A question asked while a claim is being written answers that claim, never "a spare"."""
    entered, release = threading.Event(), threading.Event()
    real_write = agent_module.write_claim

    def held_write(path: Path, claim: Claim) -> None:
        entered.set()
        release.wait(30)
        real_write(path, claim)

    monkeypatch.setattr(agent_module, "write_claim", held_write)
    settings = make_settings(tmp_path, token=SECRET, spare=True, claim_file=tmp_path / "claim.json")
    body = claim_body()
    async with served(serve, settings) as agent:
        claiming = asyncio.create_task(agent.client.post("/claim", json=body, headers=ASK))
        try:
            assert await asyncio.to_thread(entered.wait, 30)
            asking = asyncio.create_task(state_of(agent.client, ASK))
            done, _ = await asyncio.wait({asking}, timeout=0.5)
            assert not done, "answered while the claim was still being written"
        finally:
            release.set()
        assert (await claiming).status_code == 201
        claim = (await asking).claim
        assert claim is not None and str(claim.conversation_id) == body["conversation_id"]


async def test_the_cli_keeps_the_secret_of_a_claimed_spare(tmp_path: Path) -> None:
    """The CLI reads the kept claim (and replaces the token with the claim's) before the agent
    starts: the spare's secret still answers ``GET /claim``, the claim's token the rest."""
    token_file, kept = tmp_path / "token", tmp_path / "claim.json"
    token_file.write_text(SECRET)
    body = claim_body()
    write_claim(kept, Claim.model_validate(body))
    args = ("--spare", "--token-file", str(token_file), "--claim-file", str(kept))
    async with agent_process(tmp_path, clean_env(), *args) as (process, url):
        await wait_ready(url, process)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            claim = (await state_of(client, ASK)).claim
            assert claim is not None and str(claim.conversation_id) == body["conversation_id"]
            assert (await client.get("/agent-info", headers={TOKEN_HEADER: body["token"]})).status_code == 200
            assert (await client.get("/agent-info", headers={TOKEN_HEADER: SECRET})).status_code == 401


def test_claim_state_is_documented(tmp_path: Path) -> None:
    document = create_app(make_settings(tmp_path)).openapi()
    operation = document["paths"]["/claim"]["get"]
    assert operation["operationId"] == "claim_state"
    assert "200" in operation["responses"] and "401" in operation["responses"]
