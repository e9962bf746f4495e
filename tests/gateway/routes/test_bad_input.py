"""Bad input gets a 4xx with a JSON body, never a 500, and the gateway keeps serving."""

from __future__ import annotations

import uuid

import pytest
from gw_helpers import Harness, close_code, create_ready, ws_connect

ROUTES = [
    ("GET", "/conversation/{id}"),
    ("DELETE", "/conversation/{id}"),
    ("GET", "/conversation/{id}/event"),
    ("POST", "/conversation/{id}/event"),
    ("GET", "/conversation/{id}/event/{id}"),
    ("GET", "/conversation/{id}/task"),
    ("POST", "/conversation/{id}/task"),
    ("GET", "/conversation/{id}/task/{id}"),
    ("DELETE", "/conversation/{id}/task/{id}"),
    ("POST", "/conversation/{id}/dir/a"),
    ("POST", "/conversation/{id}/file/a"),
    ("GET", "/conversation/{id}/file/a"),
    ("DELETE", "/conversation/{id}/file/a"),
    ("POST", "/conversation/{id}/upload/a"),
    ("GET", "/conversation/{id}/file-content/a"),
    ("GET", "/conversation/{id}/file-search"),
    ("GET", "/conversation/{id}/file-count"),
    ("GET", "/conversation/{id}/agent-info"),
]


@pytest.mark.parametrize("ident", ["not-a-uuid", "1234", "%00"])
async def test_bad_ids_are_4xx_json_on_every_route(harness: Harness, ident: str) -> None:
    async with harness.client() as client:
        for method, template in ROUTES:
            response = await client.request(method, template.replace("{id}", ident))
            assert response.status_code in (404, 422), (method, template, response.text)
            assert "detail" in response.json()
        unknown = await client.get(f"/conversation/{uuid.uuid4()}")
        assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]


async def test_bad_bodies_and_queries(harness: Harness) -> None:
    async with harness.client() as client:
        url = str(client.base_url)
        for body in (
            {"title": "x" * 500},
            {"env": {"CONVOY_AGENT_TOKEN": "mine"}},
            {"env": {"A=B": "x"}},
            {"idle_timeout": -1},
            {"idle_timeout": 10**9},
            {"unknown": 1},
            {"limits": {"cpus": 0}},
            [1, 2],
        ):
            response = await client.post("/conversation", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["detail"]
        broken = await client.post(
            "/conversation", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422
        assert (await client.get("/conversation", params={"page_id": "garbage!"})).status_code == 422
        assert (await client.get("/conversation", params={"limit": 0})).status_code == 422
        assert (await client.get("/nowhere")).json() == {"detail": "Not Found"}

        cid = await create_ready(client)
        base = f"/conversation/{cid}"
        unknown = await client.post(f"{base}/task", json={"runnable": {"type": "Teleport"}})
        assert unknown.status_code == 422
        assert all(name in unknown.text for name in ("Ticker", "Shell", "Python"))
        assert (await client.post(f"{base}/task", json={"title": "no runnable"})).status_code == 422
        reserved = await client.post(f"{base}/event", json={"detail": {"type": "Tick"}})
        assert reserved.status_code == 422
        assert (await client.get(f"{base}/event", params={"limit": 101})).status_code == 422
        assert (await client.get(f"{base}/task", params={"status": "SLEEPING"})).status_code == 422
        assert (await client.get(f"{base}/task/{uuid.uuid4()}")).status_code == 404
        bad_cursor = await client.get(f"{base}/event", params={"page_id": "garbage"})
        assert 400 <= bad_cursor.status_code < 500 and "detail" in bad_cursor.json()

        assert await close_code(await ws_connect(url, f"{base}?after_seq=minus")) == 1008
        assert await close_code(await ws_connect(url, "/conversation/?idle_timeout=soon")) == 1008
        assert (await client.get(base)).json()["status"] == "READY", "still serving"
