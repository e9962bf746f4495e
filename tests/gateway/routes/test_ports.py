"""Preview ports through the gateway, against a real server started in the sandbox as a task
(tests/preview_app.py): path-based and host-based, by key and by signed link, HTTP and
WebSocket, streamed both ways; what never crosses (keys, link tokens, the gateway's cookies)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import websockets
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, auth, create_ready, keyed, ws_url

from sandbox_agent.protocol import (
    TOKEN_HEADER,
    WS_CLOSE_FORBIDDEN,
    WS_CLOSE_LIMIT_REACHED,
    WS_CLOSE_NOT_FOUND,
    WS_CLOSE_UNAUTHORIZED,
)
from tests.helpers import eventually, free_port
from tests.preview_app import PATTERN, source

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]
MiB = 1024 * 1024
APP_SOURCE = source()


@dataclass
class Preview:
    """A gateway, a conversation of alice's with the preview app listening on ``port``."""

    client: httpx.AsyncClient
    conversation_id: str
    port: int

    @property
    def base(self) -> str:
        return f"/conversation/{self.conversation_id}/port/{self.port}"

    @property
    def host(self) -> str:
        """The preview's host on ``localhost``, with the gateway's port."""
        return f"{self.port}-{self.conversation_id}.localhost:{self.client.base_url.port}"

    async def link(self, expires_in: int = 600, port: int | None = None) -> dict[str, Any]:
        response = await self.client.post(
            f"/conversation/{self.conversation_id}/port/{port or self.port}/link",
            json={"expires_in": expires_in},
            headers=auth(ALICE),
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def start_app(client: httpx.AsyncClient, conversation_id: str, key: str | None, port: int) -> None:
    """Starts the preview app in the sandbox on ``port``; returns once it answers through the gateway."""
    runnable = {"type": "Python", "code": APP_SOURCE, "env": {"PREVIEW_PORT": str(port)}}
    started = await client.post(
        f"/conversation/{conversation_id}/task", json={"runnable": runnable}, headers=auth(key)
    )
    assert started.status_code == 201, started.text

    task = f"/conversation/{conversation_id}/task/{started.json()['id']}"

    async def answers() -> bool:
        response = await client.get(f"/conversation/{conversation_id}/port/{port}/", headers=auth(key))
        info = (await client.get(task, headers=auth(key))).json()
        assert info["status"] in ("PENDING", "RUNNING"), f"the preview app ended: {info}"
        return response.status_code == 200

    await eventually(answers, within=60, what="the preview app answers")


def _no_cookie_jar(client: httpx.AsyncClient) -> None:
    """The test sends each cookie itself: nothing a response sets is sent again behind its back."""
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))


@asynccontextmanager
async def preview(harness: Harness, **overrides: Any) -> AsyncIterator[Preview]:
    async with harness.client(**keyed(**overrides)) as client:
        _no_cookie_jar(client)
        conversation_id = await create_ready(client, ALICE)
        port = free_port()
        await start_app(client, conversation_id, ALICE, port)
        yield Preview(client, conversation_id, port)


def _seen_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {name: value for name, value in response.json()["headers"]}


# --- path-based, by key ---------------------------------------------------------------


async def test_a_path_preview_answers_without_the_keys_and_with_a_sandbox_csp(
    process_harness: Harness,
) -> None:
    async with preview(process_harness) as p:
        response = await p.client.get(
            f"{p.base}/headers/a%20b",
            params={"q": "1", "token": ALICE},
            headers={"cookie": f"convoy_key={ALICE}; theirs=1", "x-mine": "yes", **auth(ALICE)},
        )
        seen = _seen_headers(response)
        assert response.json()["path"] == "/headers/a b" and response.json()["query"] == "q=1"
        assert response.headers["content-security-policy"] == "sandbox"
        assert seen["x-mine"] == "yes" and seen["host"] == f"127.0.0.1:{p.port}"
        # Neither key nor cookie reaches the sandbox: not the header, not the cookie, not the query.
        assert {"authorization", "cookie", TOKEN_HEADER.lower()}.isdisjoint(seen)
        assert ALICE not in response.text
        # No cookie comes back on the API's origin either (it could be the gateway's convoy_key).
        cookies = await p.client.get(f"{p.base}/cookies", headers=auth(ALICE))
        assert cookies.status_code == 200 and "set-cookie" not in cookies.headers
        # The key cookie alone admits a browser, like on every route.
        by_cookie = await p.client.get(f"{p.base}/headers", headers={"cookie": f"convoy_key={ALICE}"})
        assert "cookie" not in _seen_headers(by_cookie)
        # Every method goes through: HEAD answers the head alone, PUT and DELETE reach the server.
        head = await p.client.head(f"{p.base}/headers", headers=auth(ALICE))
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
            answer = await p.client.request(method, f"{p.base}/headers", headers=auth(ALICE))
            assert answer.json()["method"] == method
        # Without the slash, a redirect to it (relative links then resolve under the preview).
        bare = await p.client.get(p.base, params={"a": "1"}, headers=auth(ALICE))
        assert bare.status_code == 307 and bare.headers["location"] == f"{p.base}/?a=1"


async def test_bodies_stream_both_ways_through_the_gateway(process_harness: Harness) -> None:
    async with preview(process_harness) as p:
        size = 64 * MiB

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size // len(PATTERN)):
                yield PATTERN

        posted = await p.client.post(f"{p.base}/count", content=body(), headers=auth(ALICE))
        assert posted.status_code == 200, posted.text
        expected = hashlib.sha256(PATTERN * (size // len(PATTERN))).hexdigest()
        assert posted.json() == {"bytes": size, "sha256": expected}
        digest, received = hashlib.sha256(), 0
        async with p.client.stream("GET", f"{p.base}/big", params={"mib": 64}, headers=auth(ALICE)) as down:
            assert down.status_code == 200
            async for chunk in down.aiter_bytes():
                digest.update(chunk)
                received += len(chunk)
        assert received == size and digest.hexdigest() == expected


async def test_others_ids_unknown_ports_and_bad_ports(process_harness: Harness) -> None:
    async with preview(process_harness) as p:
        for key in (BOB, None):
            refused = await p.client.get(f"{p.base}/headers", headers=auth(key))
            assert refused.status_code == (404 if key else 401), refused.text
        admin = await p.client.get(f"{p.base}/headers", headers=auth(ADMIN_KEY))
        assert admin.status_code == 200
        unknown = await p.client.get("/conversation/not-a-uuid/port/80/", headers=auth(ALICE))
        assert unknown.status_code == 404 and unknown.json()["detail"]
        nobody = free_port()
        silent = await p.client.get(f"/conversation/{p.conversation_id}/port/{nobody}/", headers=auth(ALICE))
        assert silent.status_code == 502
        assert f"nothing listens on port {nobody}" in silent.json()["detail"]
        for port in ("0", "65536", "http"):
            bad_port = f"/conversation/{p.conversation_id}/port/{port}"
            bad = await p.client.get(f"{bad_port}/", headers=auth(ALICE))
            assert bad.status_code == 422 and "port" in bad.json()["detail"], port
            link = await p.client.post(f"{bad_port}/link", headers=auth(ALICE))
            assert link.status_code == 422, port


async def test_a_websocket_is_relayed_both_ways(process_harness: Harness) -> None:
    async with preview(process_harness) as p:
        url = ws_url(str(p.client.base_url), f"{p.base}/ws")
        async with websockets.connect(
            url, additional_headers=auth(ALICE), subprotocols=[websockets.Subprotocol("echo.v1")]
        ) as ws:
            assert ws.subprotocol == "echo.v1"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(PATTERN)  # 1 MiB, binary
            assert await ws.recv() == PATTERN
        for key, code in ((None, WS_CLOSE_UNAUTHORIZED), (BOB, WS_CLOSE_NOT_FOUND)):
            async with websockets.connect(url, additional_headers=auth(key)) as refused:
                with pytest.raises(websockets.ConnectionClosed):
                    await refused.recv()
            assert refused.close_code == code


# --- signed links ---------------------------------------------------------------------


async def test_a_link_works_without_a_key_until_it_expires(process_harness: Harness) -> None:
    async with preview(process_harness) as p:
        link = await p.link(expires_in=600)
        url = urlsplit(link["url"])
        assert url.path == f"{p.base}/" and url.query.startswith("convoy_preview=")
        first = await p.client.get(f"{url.path}headers?{url.query}&x=1")
        seen = _seen_headers(first)
        assert first.json()["query"] == "x=1"  # the token does not reach the sandbox
        assert first.headers["referrer-policy"] == "no-referrer"
        [cookie] = SimpleCookie(first.headers["set-cookie"]).values()
        assert cookie.key == "convoy_preview" and cookie["path"] == f"{p.base}/"
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and 0 < int(cookie["max-age"]) <= 600
        # A sub-resource: the cookie alone admits it, and never reaches the sandbox.
        jar = {"cookie": f"{cookie.key}={cookie.value}"}
        sub = await p.client.get(f"{p.base}/headers/style.css", headers=jar)
        assert "cookie" not in _seen_headers(sub) and "convoy_preview" not in str(seen)
        # Bound to its port: another port of the same conversation refuses it.
        other = await p.client.get(f"/conversation/{p.conversation_id}/port/{p.port + 1}/?{url.query}")
        assert other.status_code == 403
        tampered = await p.client.get(f"{url.path}?{url.query[:-2]}xx")
        assert tampered.status_code == 403 and "not valid" in tampered.json()["detail"]
        # One that expires: works, then 403 with a JSON body once its second is over.
        short = urlsplit((await p.link(expires_in=1))["url"])
        expired = await eventually(
            lambda: _status_is(p.client, f"{short.path}?{short.query}", 403), what="the link expires"
        )
        assert "expired" in expired.json()["detail"]
        too_long = await p.client.post(f"{p.base}/link", json={"expires_in": 10**9}, headers=auth(ALICE))
        assert too_long.status_code == 422 and "at most" in too_long.json()["detail"]


async def _status_is(client: httpx.AsyncClient, url: str, status: int) -> httpx.Response | None:
    response = await client.get(url)
    return response if response.status_code == status else None


async def test_deleting_the_conversation_revokes_its_links(process_harness: Harness) -> None:
    async with preview(process_harness) as p:
        url = urlsplit((await p.link())["url"])
        assert (await p.client.get(f"{url.path}?{url.query}")).status_code == 200
        bob = await p.client.post(f"{p.base}/link", headers=auth(BOB))
        assert bob.status_code == 404
        deleted = await p.client.delete(f"/conversation/{p.conversation_id}", headers=auth(ALICE))
        assert deleted.status_code == 204
        gone = await p.client.get(f"{url.path}?{url.query}")
        assert gone.status_code == 404 and gone.json()["detail"]


async def test_a_link_opens_a_websocket_and_link_holders_sockets_are_capped(process_harness: Harness) -> None:
    async with preview(process_harness, max_websockets_per_principal=1) as p:
        url = urlsplit((await p.link())["url"])
        address = ws_url(str(p.client.base_url), f"{p.base}/ws?{url.query}")
        async with websockets.connect(address) as first:
            await first.send("by link")
            assert await first.recv() == "by link"
            # No principal to count against: the conversation's link holders share the cap.
            async with websockets.connect(address) as second:
                with pytest.raises(websockets.ConnectionClosed):
                    await second.recv()
            assert second.close_code == WS_CLOSE_LIMIT_REACHED
        tampered = ws_url(str(p.client.base_url), f"{p.base}/ws?{url.query[:-2]}xx")
        async with websockets.connect(tampered) as refused:
            with pytest.raises(websockets.ConnectionClosed):
                await refused.recv()
        assert refused.close_code == WS_CLOSE_FORBIDDEN


# --- host-based -----------------------------------------------------------------------


async def test_host_previews_get_their_own_origin_and_the_api_keeps_its_checks(
    process_harness: Harness,
) -> None:
    async with preview(process_harness, preview_domain="localhost") as p:
        link = await p.link()
        url = urlsplit(link["url"])
        assert url.scheme == "http" and url.netloc == p.host and url.path == "/"
        # Every path of that host is the preview's: /conversation is the app's, not the API's.
        first = await p.client.get(f"/conversation?{url.query}", headers={"host": p.host})
        assert first.json()["path"] == "/conversation"
        assert "content-security-policy" not in first.headers
        [cookie] = SimpleCookie(first.headers["set-cookie"]).values()
        assert cookie["path"] == "/" and not cookie["domain"]  # host-only: this preview alone
        jar = f"convoy_preview={cookie.value}; app=1; convoy_key={ALICE}"
        sub = await p.client.get("/headers/app.js", headers={"host": p.host, "cookie": jar})
        assert _seen_headers(sub)["cookie"] == "app=1"  # the app's cookie, none of ours
        # The app's cookies come back, but none that names the gateway's or the link's.
        cookies = await p.client.get("/cookies", headers={"host": p.host, "cookie": jar})
        assert cookies.headers.get_list("set-cookie") == ["app=1; Path=/"]
        # Without a link or a key: 401, as any other request.
        assert (await p.client.get("/headers", headers={"host": p.host})).status_code == 401
        # A WebSocket on the preview host, admitted by the cookie.
        # Dialled at the gateway's address, named by the preview host (as a browser resolves it).
        async with websockets.connect(
            f"ws://{p.host}/ws", host="127.0.0.1", additional_headers={"cookie": jar}
        ) as ws:
            await ws.send("over the host")
            assert await ws.recv() == "over the host"
        # The API itself is as it was: keys, exact hosts.
        api = await p.client.get(f"/conversation/{p.conversation_id}", headers=auth(ALICE))
        assert api.status_code == 200 and api.json()["id"] == p.conversation_id


async def test_a_preview_domain_routes_its_hosts_and_local_mode_keeps_loopback_hosts(
    process_harness: Harness,
) -> None:
    async with process_harness.client(preview_domain="preview.test") as client:
        _no_cookie_jar(client)
        conversation_id = await create_ready(client)
        port = free_port()
        await start_app(client, conversation_id, None, port)
        made = await client.post(f"/conversation/{conversation_id}/port/{port}/link", json={})
        url = urlsplit(made.json()["url"])
        assert url.scheme == "https" and url.netloc == f"{port}-{conversation_id}.preview.test"
        # In local mode the API answers only on loopback names; the preview host is admitted by
        # its link, never as the API.
        host = {"host": url.netloc}
        assert (await client.get(f"/headers?{url.query}", headers=host)).json()["path"] == "/headers"
        assert (await client.get("/headers", headers=host)).status_code == 403
        assert (await client.get("/health", headers={"host": "preview.test"})).status_code == 200
        refused = await client.get(f"/conversation/{conversation_id}", headers={"host": "preview.test"})
        assert refused.status_code == 403


# --- every runtime (Docker included) ----------------------------------------------------


async def test_http_and_websocket_servers_answer_on_every_runtime(any_harness: Harness) -> None:
    """The hop inside the sandbox is the agent's: on Docker the server listens on the
    container's own loopback, which nothing outside it can reach but the agent."""
    async with preview(any_harness) as p:
        url = urlsplit((await p.link())["url"])
        page = await p.client.get(f"{url.path}headers?{url.query}")
        assert page.json()["path"] == "/headers" and "authorization" not in _seen_headers(page)
        size = 16 * MiB
        posted = await p.client.post(f"{p.base}/count", content=PATTERN * 16, headers=auth(ALICE))
        assert posted.json()["bytes"] == size
        async with p.client.stream("GET", f"{p.base}/big", params={"mib": 16}, headers=auth(ALICE)) as down:
            assert sum([len(chunk) async for chunk in down.aiter_bytes()]) == size
        async with websockets.connect(
            ws_url(str(p.client.base_url), f"{p.base}/ws"), additional_headers=auth(ALICE)
        ) as ws:
            await ws.send("from outside")
            assert await ws.recv() == "from outside"
