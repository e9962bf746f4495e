"""Who may do what: anonymous, user A (owner), user B, admin x every route (both runtimes)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gw_helpers import (
    ADMIN_KEY,
    USER_KEYS,
    Harness,
    auth,
    close_code,
    create_ready,
    keyed,
    recv_json,
    ws_connect,
)
from raw_http import RawHttp
from websockets.asyncio.client import ClientConnection, connect

from gateway.auth import is_loopback_host
from sandbox_agent.protocol import WS_CLOSE_FORBIDDEN, WS_CLOSE_NOT_FOUND, WS_CLOSE_UNAUTHORIZED

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]


def _routes(cid: str, event_id: str, task_id: str) -> list[tuple[str, str, dict[str, Any], set[int]]]:
    """(method, path, request kwargs, the statuses an owner may get) for every per-conversation route."""
    base = f"/conversation/{cid}"
    ticker = {"runnable": {"type": "Ticker", "interval": 0, "iterations": 1}}
    return [
        ("GET", base, {}, {200}),
        ("GET", f"{base}/event", {}, {200}),
        ("POST", f"{base}/event", {"json": {"detail": {"type": "note"}}}, {201}),
        ("GET", f"{base}/event/{event_id}", {}, {200}),
        ("GET", f"{base}/task", {}, {200}),
        ("POST", f"{base}/task", {"json": ticker}, {201}),
        ("GET", f"{base}/task/{task_id}", {}, {200}),
        ("DELETE", f"{base}/task/{task_id}", {}, {200, 409}),  # 409: already cancelled by the owner
        ("POST", f"{base}/dir/d-{uuid.uuid4().hex}", {}, {201, 409}),  # 409: the owner made it first
        ("POST", f"{base}/file/f-{uuid.uuid4().hex}", {}, {201, 409}),
        ("GET", f"{base}/file/hello.txt", {}, {200}),
        ("POST", f"{base}/upload/up-{uuid.uuid4().hex}", {"files": [("files", ("x.txt", b"x"))]}, {201}),
        ("GET", f"{base}/file-content/hello.txt", {}, {200}),
        ("GET", f"{base}/file-search", {}, {200}),
        ("GET", f"{base}/file-count", {}, {200}),
        ("GET", f"{base}/agent-info", {}, {200}),
    ]


async def _status(client: httpx.AsyncClient, method: str, path: str, key: str | None, **kwargs: Any) -> int:
    response = await client.request(method, path, headers=auth(key), **kwargs)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json", response.headers
        assert response.json()["detail"]
    return response.status_code


async def test_auth_matrix_http(any_harness: Harness) -> None:
    async with any_harness.client(**keyed()) as client:
        cid = await create_ready(client, ALICE, title="alice's")
        base = f"/conversation/{cid}"
        await client.post(f"{base}/upload/", files=[("files", ("hello.txt", b"hello"))], headers=auth(ALICE))
        event = await client.post(f"{base}/event", json={"detail": {"type": "x"}}, headers=auth(ALICE))
        task = await client.post(
            f"{base}/task", json={"runnable": {"type": "Ticker", "interval": 60}}, headers=auth(ALICE)
        )
        routes = _routes(cid, event.json()["id"], task.json()["id"])
        unknown_id = str(uuid.uuid4())
        unknown = await client.get(f"/conversation/{unknown_id}/agent-info", headers=auth(BOB))
        assert unknown.status_code == 404
        like_unknown = unknown.json()["detail"].replace(unknown_id, cid)

        for method, path, kwargs, ok in routes:
            assert await _status(client, method, path, None, **kwargs) == 401, (method, path)
            assert await _status(client, method, path, "wrong-key", **kwargs) == 401, (method, path)
            foreign = await client.request(method, path, headers=auth(BOB), **kwargs)
            assert foreign.status_code == 404, (method, path)
            assert foreign.json()["detail"] == like_unknown, "exactly like an unknown id"
            assert await _status(client, method, path, ALICE, **kwargs) in ok, (method, path)
            assert await _status(client, method, path, ADMIN_KEY, **kwargs) in ok, (method, path)

        for path in ("/conversation", "/conversation-count"):
            assert await _status(client, "GET", path, None) == 401
            assert await _status(client, "GET", path, ALICE) == 403
            assert await _status(client, "GET", path, BOB) == 403
            assert await _status(client, "GET", path, ADMIN_KEY) == 200
        listed = (await client.get("/conversation", headers=auth(ADMIN_KEY))).json()
        assert [c["id"] for c in listed["results"]] == [cid]
        assert listed["results"][0]["owner"] == "alice"

        assert await _status(client, "POST", "/conversation", None, json={}) == 401
        assert await _status(client, "DELETE", base, None) == 401
        assert await _status(client, "DELETE", base, BOB) == 404
        assert await _status(client, "DELETE", base, ALICE) == 204
        assert await _status(client, "GET", base, ALICE) == 404
        assert await _status(client, "GET", base, ADMIN_KEY) == 404

        # Browsers: the key as a query token or a cookie; a cookie from another origin is refused.
        bob_cid = await create_ready(client, BOB)
        assert (await client.get(f"/conversation/{bob_cid}", params={"token": BOB})).status_code == 200
        cookie = {"Cookie": f"convoy_key={BOB}"}
        by_cookie = await client.get(f"/conversation/{bob_cid}", headers=cookie)
        assert by_cookie.status_code == 200
        cross = await client.get(
            f"/conversation/{bob_cid}", headers={**cookie, "Origin": "https://evil.example"}
        )
        assert cross.status_code == 403


async def test_auth_matrix_websockets(any_harness: Harness) -> None:
    async with any_harness.serve(**keyed()) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        cid = await create_ready(client, ALICE)
        path = f"/conversation/{cid}"
        assert await close_code(await ws_connect(url, path)) == WS_CLOSE_UNAUTHORIZED
        assert await close_code(await ws_connect(url, path, "wrong")) == WS_CLOSE_UNAUTHORIZED
        assert await close_code(await ws_connect(url, path, BOB)) == WS_CLOSE_NOT_FOUND
        assert (
            await close_code(await ws_connect(url, f"/conversation/{uuid.uuid4()}", BOB))
            == WS_CLOSE_NOT_FOUND
        )
        assert await close_code(await ws_connect(url, "/conversation/not-a-uuid", BOB)) == WS_CLOSE_NOT_FOUND
        for key in (ALICE, ADMIN_KEY):
            ws = await ws_connect(url, path, key)
            assert (await recv_json(ws))["detail"]["status"] == "READY"
            await ws.close()
        ws = await ws_connect(url, f"{path}?token={ALICE}")
        assert (await recv_json(ws))["detail"]["status"] == "READY"
        await ws.close()
        ws = await connect(
            f"ws{url.removeprefix('http')}{path}", additional_headers={"Cookie": f"convoy_key={ALICE}"}
        )
        assert (await recv_json(ws))["detail"]["status"] == "READY"
        await ws.close()
        cross = await connect(
            f"ws{url.removeprefix('http')}{path}",
            additional_headers={"Cookie": f"convoy_key={ALICE}"},
            origin="https://evil.example",  # type: ignore[arg-type]
        )
        assert await close_code(cross) == WS_CLOSE_FORBIDDEN

        assert await close_code(await ws_connect(url, "/conversation/")) == WS_CLOSE_UNAUTHORIZED
        assert await close_code(await ws_connect(url, "/firehose/")) == WS_CLOSE_UNAUTHORIZED
        assert await close_code(await ws_connect(url, "/firehose/", ALICE)) == WS_CLOSE_FORBIDDEN
        firehose = await ws_connect(url, "/firehose/", ADMIN_KEY)
        await client.post(f"{path}/event", json={"detail": {"type": "seen"}}, headers=auth(ALICE))
        assert (await recv_json(firehose))["detail"]["type"] == "seen"
        await firehose.close()


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "192.0.2.1:8000",
        # DNS rebinding: names that only look like loopback, which DNS can point anywhere.
        "127.attacker.example",
        "127.0.0.1.nip.io",
        "127.0.0.1.nip.io:8000",
        "localhost.attacker.example",
        "0.0.0.0:8000",
        "",
    ],
)
async def test_local_mode_answers_only_loopback_names(harness: Harness, host: str) -> None:
    async with harness.client() as client:
        assert (await client.get("/conversation-count")).status_code == 200
        refused = await client.get("/conversation-count", headers={"Host": host})
        assert refused.status_code == 403
        cross = await client.post("/conversation", json={}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        assert (await client.get("/conversation-count")).json() == {"count": 0}


def test_loopback_host_names() -> None:
    for host in (
        "localhost",
        "localhost:8000",
        "LocalHost",
        "convoy.localhost:8000",
        "127.0.0.1",
        "127.0.0.1:1",
    ):
        assert is_loopback_host(host), host
    for host in ("127.9.9.9:8000", "[::1]", "[::1]:8000"):
        assert is_loopback_host(host), host
    for host in ("::1", "[::2]", "127.1", "127.0.0.1.", "localhost.", ".localhost", "a..localhost"):
        assert not is_loopback_host(host), host
    for host in ("127.0.0.1:", "127.0.0.1:123456", "127.0.0.1@evil.example", "evil.example#@127.0.0.1"):
        assert not is_loopback_host(host), host


def test_loopback_verdicts_survive_the_cache() -> None:
    """The verdicts are cached by header value: asked again, after enough other names to
    evict them, they are the same."""
    for _ in range(2):
        assert is_loopback_host("localhost:8000")
        assert not is_loopback_host("127.0.0.1.nip.io")
        for number in range(1000):  # more distinct names than the cache keeps
            assert not is_loopback_host(f"name{number}.example")


@pytest.mark.parametrize("host", ["localhost:8000", "convoy.localhost", "127.0.0.2", "[::1]:8000"])
async def test_local_mode_answers_exact_loopback_names(harness: Harness, host: str) -> None:
    async with harness.client() as client:
        assert (await client.get("/conversation-count", headers={"Host": host})).status_code == 200


async def _ws_with_host(base_url: str, host: str, path: str) -> ClientConnection:
    """A WebSocket to the gateway whose handshake names ``host`` (as a rebound name would)."""
    port = int(base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    return await connect(f"ws://{host}:{port}{path}", sock=sock, open_timeout=60)


async def test_local_mode_websockets_check_the_host_too(harness: Harness) -> None:
    async with harness.serve() as url:
        for host in ("127.attacker.example", "127.0.0.1.nip.io"):
            refused = await _ws_with_host(url, host, "/firehose/")
            assert await close_code(refused) == WS_CLOSE_FORBIDDEN, host
        for host in ("localhost", "127.0.0.1"):
            ws = await _ws_with_host(url, host, "/firehose/")
            await ws.ping()
            await ws.close()


async def test_a_body_is_never_read_before_authentication(harness: Harness) -> None:
    async with harness.serve(**keyed()) as url:
        for key in (None, "wrong-key"):
            async with RawHttp.connect(url) as raw:
                # 100 MB announced, not one byte sent: the answer must not wait for them.
                headers = {"Content-Type": "application/json", "Content-Length": str(100 * 1024 * 1024)}
                await raw.send(
                    b"POST /conversation HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + "".join(f"{k}: {v}\r\n" for k, v in {**headers, **auth(key)}.items()).encode()
                    + b"\r\n"
                )
                refused = await raw.response()
                assert refused.status == 401 and refused.json()["detail"], refused
                assert refused.headers["connection"] == "close"
                assert await raw.closed()
        async with RawHttp.connect(url) as raw:
            # A small body is dropped unread and the connection serves on.
            small = await raw.request("POST", "/conversation", body=b'{"title": "x"}')
            assert small.status == 401 and "connection" not in small.headers
            again = await raw.request("GET", "/health")
            assert again.status == 200, "the same connection"


async def test_the_gateways_own_bodies_are_capped_and_proxied_ones_stream(harness: Harness) -> None:
    cap = 64 * 1024
    async with harness.client(max_body_bytes=cap) as client:
        url = str(client.base_url)
        large = b'{"title": "' + b"x" * cap + b'"}'
        declared = await client.post(
            "/conversation", content=large, headers={"Content-Type": "application/json"}
        )
        assert declared.status_code == 413 and str(cap) in declared.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(large), 4096):
                yield large[start : start + 4096]

        async with httpx.AsyncClient(base_url=url, timeout=60) as fresh:
            chunked = await fresh.post(
                "/conversation", content=chunks(), headers={"Content-Type": "application/json"}
            )
        assert chunked.status_code == 413 and chunked.json()["detail"]
        assert (await client.get("/conversation-count")).json() == {"count": 0}, "nothing was created"

        cid = await create_ready(client)
        upload = await client.post(
            f"/conversation/{cid}/upload/", files=[("files", ("big.bin", b"b" * (4 * cap)))]
        )
        assert upload.status_code == 201, upload.text
        content = await client.get(f"/conversation/{cid}/file-content/big.bin")
        assert len(content.content) == 4 * cap
