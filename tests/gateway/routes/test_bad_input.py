"""Bad input gets a 4xx with a JSON body, never a 500, and the gateway keeps serving."""

from __future__ import annotations

import json
import uuid

import pytest
from gw_helpers import Harness, close_code, create_ready, is_status, recv_json, recv_until, ws_connect
from raw_http import RawHttp

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


async def test_non_finite_numbers_are_422_and_the_connection_serves_on(harness: Harness) -> None:
    async with harness.serve() as url, RawHttp.connect(url) as raw:
        json_type = {"Content-Type": "application/json"}
        for body in (
            b'{"idle_timeout": NaN}',
            b'{"idle_timeout": Infinity}',
            b'{"idle_timeout": -Infinity}',
            b'{"limits": {"cpus": Infinity}}',
            b'{"limits": {"cpus": NaN}}',
            b'{"idle_timeout": 1e400}',
        ):
            # One keep-alive connection throughout: a 500 would reset it.
            response = await raw.request("POST", "/conversation", json_type, body)
            assert response.status == 422, (body, response)
            assert response.headers["content-type"] == "application/json"
            assert "finite" in json.dumps(response.json()["detail"]), response.json()
        assert (await raw.request("GET", "/conversation-count")).json() == {"count": 0}
        assert await close_code(await ws_connect(url, "/conversation/?idle_timeout=nan")) == 1008


async def test_a_range_of_thousands_of_digits_is_answered(harness: Harness) -> None:
    async with harness.client() as client:
        cid = await create_ready(client)
        base = f"/conversation/{cid}"
        await client.post(f"{base}/upload/", files=[("files", ("f.txt", b"0123456789"))])
        async with RawHttp.connect(str(client.base_url)) as raw:
            huge = "9" * 5000
            past_the_end = await raw.request("GET", f"{base}/file-content/f.txt", {"Range": f"bytes={huge}-"})
            assert past_the_end.status == 416 and past_the_end.json()["detail"]
            assert past_the_end.headers["content-range"] == "bytes */10"
            to_the_end = await raw.request("GET", f"{base}/file-content/f.txt", {"Range": f"bytes=2-{huge}"})
            assert to_the_end.status == 206 and to_the_end.body == b"23456789"
            suffix = await raw.request("GET", f"{base}/file-content/f.txt", {"Range": f"bytes=-{huge}"})
            assert suffix.status == 206 and suffix.body == b"0123456789"


async def test_a_deeply_nested_frame_gets_an_error_and_the_socket_stays(harness: Harness) -> None:
    async with harness.serve() as url:
        ws = await ws_connect(url, "/conversation/")  # create and follow
        await recv_until(ws, is_status("READY"))
        for depth in (100_000, 900):
            await ws.send('{"detail": {"type": "deep", "x": ' + "[" * depth + "]" * depth + "}}")
            error = await recv_json(ws)
            assert error["seq"] == 0 and error["detail"]["type"] == "Error", error
            assert "deeper" in error["detail"]["message"]
        await ws.send(json.dumps({"detail": {"type": "still-here"}}))
        assert (await recv_json(ws))["detail"]["type"] == "still-here"
        await ws.close()


async def test_deeply_nested_bodies_are_4xx_and_the_connection_serves_on(harness: Harness) -> None:
    async with harness.client() as client:
        cid = await create_ready(client)
        async with RawHttp.connect(str(client.base_url)) as raw:
            json_type = {"Content-Type": "application/json"}
            for depth in (900, 100_000):
                nested = b"[" * depth + b"]" * depth
                # The gateway's own body, and one the agent validates (behind the proxy).
                for path, body in (
                    ("/conversation", b'{"title": ' + nested + b"}"),
                    (
                        f"/conversation/{cid}/task",
                        b'{"runnable": {"type": "Ticker"}, "title": ' + nested + b"}",
                    ),
                ):
                    response = await raw.request("POST", path, json_type, body)
                    assert 400 <= response.status < 500, (path, depth, response)
                    assert response.json()["detail"]
