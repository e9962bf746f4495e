"""Request ids and JSON logs: every answer has an ``X-Request-Id`` (the caller's sane one, or
a new one); with ``CONVOY_LOG_FORMAT=json`` each request is one JSON line carrying that id,
the route template, status, duration and principal, and no key or token ever."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, auth, create_ready, keyed
from gw_process import gateway_env, gateway_process, gateway_up

from gateway.requestlog import HEADER, JsonLines
from gateway.server import RedactTokens
from tests.helpers import eventually, free_port

ALICE = USER_KEYS["alice"]


@contextmanager
def json_lines() -> Iterator[list[str]]:
    """What the gateway logs meanwhile, formatted as the JSON format writes it."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonLines())
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.addHandler(handler)
    access = logging.getLogger("convoy.access")
    level = access.level
    access.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        access.setLevel(level)


def access_lines(lines: list[str]) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    return [line for line in parsed if line["logger"] == "convoy.access"]


async def test_each_request_is_one_json_line_with_the_id_of_its_answer(harness: Harness) -> None:
    with json_lines() as lines:
        async with harness.client(**keyed(log_format="json")) as client:
            cid = await create_ready(client, ALICE, title="logged")
            answer = await client.get(f"/conversation/{cid}", headers=auth(ALICE))
            rid = answer.headers[HEADER]
            echoed = await client.get("/health", headers={HEADER: "trace-42.a:b"})
            assert echoed.headers[HEADER] == "trace-42.a:b"
            for insane in ("x" * 129, "bad id", "<script>"):
                replaced = await client.get("/health", headers={HEADER: insane})
                assert replaced.headers[HEADER] != insane and len(replaced.headers[HEADER]) == 32
            refused = await client.get(f"/conversation/{cid}?token=wrong-secret-token")
            assert refused.status_code == 401
            await client.get("/conversation", headers=auth(ADMIN_KEY))
    access = access_lines(lines)
    mine = [line for line in access if line["request_id"] == rid]
    assert len(mine) == 1, access
    line = mine[0]
    assert line["route"] == "/conversation/{conversation_id}" and line["method"] == "GET"
    assert line["status"] == 200 and line["principal"] == "alice"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert any(entry["request_id"] == "trace-42.a:b" for entry in access)
    anonymous = [entry for entry in access if entry["status"] == 401]
    assert anonymous and anonymous[0]["principal"] is None
    assert any(entry["principal"] == "admin" for entry in access)
    everything = "\n".join(lines)
    for secret in (ALICE, ADMIN_KEY, USER_KEYS["bob"], "wrong-secret-token"):
        assert secret not in everything
    assert cid not in {str(entry["route"]) for entry in access}  # templates, never raw paths


async def test_text_logs_stay_the_default_and_still_give_ids(harness: Harness) -> None:
    with json_lines() as lines:
        async with harness.client() as client:
            answer = await client.get("/health")
    assert len(answer.headers[HEADER]) == 32
    assert access_lines(lines) == []  # no access lines unless asked for


async def test_a_json_gateway_process_logs_json_lines_only(tmp_path: Path, agent_env: dict[str, str]) -> None:
    port, log = free_port(), tmp_path / "gateway.log"
    env = gateway_env(
        agent_env,
        port,
        tmp_path / "state",
        log_format="json",
        **{"api_keys": f"alice:{ALICE}", "admin_keys": ADMIN_KEY},
    )
    async with (
        gateway_process(env, log) as process,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        await gateway_up(client)
        answer = await client.get("/conversation-count", headers=auth(ADMIN_KEY))
        assert answer.status_code == 200
        rid = answer.headers[HEADER]

        def logged() -> list[dict[str, object]]:
            text = log.read_text()
            return [json.loads(line) for line in text.splitlines() if rid in line]

        async def written() -> list[dict[str, object]]:
            return logged()

        found = await eventually(written, what="the request's line in the gateway's log")
        process.terminate()
        await process.wait()
    assert found[0]["route"] == "/conversation-count" and found[0]["principal"] == "admin"
    for line in log.read_text().splitlines():
        json.loads(line)  # every line, uvicorn's own and the shutdown's too
    assert ADMIN_KEY not in log.read_text() and ALICE not in log.read_text()
