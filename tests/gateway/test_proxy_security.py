"""The proxy against a real agent (process runtime, and Docker where marked): only the
declared routes are reachable, whatever the encoding; framing headers, oversized
requests and downloads are handled by the gateway, never left to the agent."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from gw_helpers import Harness, create_ready

from gateway.settings import Settings


def _status_updates(events: list[dict[str, Any]]) -> list[str]:
    return [e["detail"]["status"] for e in events if e["detail"]["type"] == "ConversationStatusUpdate"]


async def test_an_encoded_slash_reaches_no_undeclared_agent_route(any_harness: Harness) -> None:
    """``%2F`` in the conversation id segment used to shift the raw path onto the
    agent's gateway-only routes (``/status``, ``/openapi.json``)."""
    async with any_harness.client() as client:
        cid = await create_ready(client)
        forged = await client.post(
            f"/conversation/{cid}%2Ffile/status", json={"status": "STOPPING", "reason": "forged"}
        )
        # The gateway matched POST .../file/{path} with path "status": that is what the agent did.
        assert forged.status_code == 201, forged.text
        assert forged.json()["path"] == "status"
        document = await client.get(f"/conversation/{cid}%2Ffile/openapi.json")
        assert document.status_code == 404, document.text
        assert "openapi" not in document.json()
        dotted = await client.post(f"/conversation/{cid}/file/..%2Fstatus", json={"status": "STOPPING"})
        assert dotted.status_code in (400, 403), dotted.text
        events = (await client.get(f"/conversation/{cid}/event")).json()["results"]
        assert _status_updates(events) == ["READY"]
        assert (await client.get(f"/conversation/{cid}")).json()["status"] == "READY"


async def test_encoded_names_reach_the_agent_decoded_once(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        base = f"/conversation/{await create_ready(client)}"
        made = await client.post(f"{base}/file/dir%20a/100%25%3F%23.txt")
        assert made.status_code == 201, made.text
        assert made.json()["path"] == "dir a/100%?#.txt"
        info = await client.get(f"{base}/file/dir%20a%2F100%25%3F%23.txt")
        assert info.status_code == 200 and info.json()["name"] == "100%?#.txt"


async def _raw_exchange(url: str, requests: list[bytes]) -> list[tuple[int, dict[str, str], bytes]]:
    """Sends each request on ONE connection, reading each answer (by Content-Length) before
    the next: the connection must stay usable throughout."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 30)
            answers.append((int(status_line.split()[1]), headers, body))
    finally:
        writer.close()
    return answers


async def test_a_connection_header_naming_content_length_is_not_obeyed(any_harness: Harness) -> None:
    """Content-Length is the body's framing: dropping it upstream made h11 fail (a 500)."""
    async with any_harness.client() as client:
        cid = await create_ready(client)
        port = urlsplit(str(client.base_url)).port
        body = json.dumps({"detail": {"type": "note", "text": "framed"}}).encode()
        post = (
            f"POST /conversation/{cid}/event HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: content-length\r\n\r\n"
        ).encode() + body
        get = f"GET /conversation/{cid}/event?type=note HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        (posted, _, posted_body), (listed, _, listed_body) = await _raw_exchange(
            str(client.base_url), [post, get]
        )
        assert posted == 201, posted_body
        assert listed == 200, listed_body
        assert [e["detail"]["text"] for e in json.loads(listed_body)["results"]] == ["framed"]


async def test_oversized_requests_get_json_414_and_431_from_the_gateway(any_harness: Harness) -> None:
    """Not whatever the agent's parser, with its smaller limits, makes of them (a plain-text
    400, a broken answer; or a path too long for the file system)."""
    async with any_harness.client() as client:
        cid = await create_ready(client)
        url = str(client.base_url)
        # Past the bounds; headers past one read of the agent's server too (the gateway's
        # own server refuses URLs of 64 KiB and more, before any route).
        for size, header_size in ((20_000, 20_000), (60_000, 300_000)):
            for target, header, status in (
                (f"/conversation/{cid}/file/{'a/' * (size // 2)}", "", 414),
                (f"/conversation/{cid}/file-search?q={'a' * size}", "", 414),
                (f"/conversation/{cid}/agent-info", f"X-Big: {'a' * header_size}\r\n", 431),
            ):
                request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n".encode()
                [(code, headers, body)] = await _raw_exchange(url, [request])
                assert code == status, body[:200]
                assert headers["content-type"] == "application/json"
                assert "exceed" in json.loads(body)["detail"]
        assert (await client.get(f"/conversation/{cid}/agent-info")).status_code == 200


async def test_the_agent_takes_requests_up_to_the_bounds(any_harness: Harness) -> None:
    defaults = Settings.model_fields
    max_url = defaults["proxy_max_url_bytes"].default
    max_headers = defaults["proxy_max_header_bytes"].default
    async with any_harness.client() as client:
        base = f"/conversation/{await create_ready(client)}"
        query = {"q": "b" * (max_url - len("/file-count?q=") - 1)}
        near = await client.get(f"{base}/file-count", params=query)
        assert near.status_code == 200, near.text[:200]
        assert near.json() == {"count": 0}
        assert (await client.get(f"{base}/file-count", params={"q": query["q"] + "bb"})).status_code == 414
        # httpx adds a few headers of its own (host, accept, user-agent...): well below 600 bytes.
        headers = {"X-Big": "a" * (max_headers - 600)}
        near = await client.get(f"{base}/file-count", params=query, headers=headers)
        assert near.status_code == 200, near.text[:200]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("page.html", b"<html><script>alert(document.cookie)</script></html>"),
        ("image.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ],
)
async def test_downloads_are_sandboxed_attachments(any_harness: Harness, name: str, content: bytes) -> None:
    async with any_harness.client() as client:
        base = f"/conversation/{await create_ready(client)}"
        uploaded = await client.post(f"{base}/upload/", files={"files": (name, content)})
        assert uploaded.status_code == 201, uploaded.text
        for headers in ({}, {"Range": "bytes=0-9"}):
            download = await client.get(f"{base}/file-content/{name}", headers=headers)
            assert download.status_code in (200, 206), download.text
            assert download.content == (content if not headers else content[:10])
            assert download.headers["content-disposition"] == f"attachment; filename*=UTF-8''{name}"
            assert download.headers["x-content-type-options"] == "nosniff"
            assert download.headers["content-security-policy"] == "sandbox"
        missing = await client.get(f"{base}/file-content/missing-{name}")
        assert missing.status_code == 404 and "content-disposition" not in missing.headers
        assert missing.headers["x-content-type-options"] == "nosniff"
        assert missing.headers["content-security-policy"] == "sandbox"


async def test_headers_the_gateway_keeps_do_not_count(any_harness: Harness) -> None:
    """Headers forwarded are what counts: a large Cookie or Authorization stays at the gateway."""
    async with any_harness.client() as client:
        base = f"/conversation/{await create_ready(client)}"
        cookie = {"Cookie": "jar=" + "c" * 10_000}
        response = await client.get(f"{base}/agent-info", headers=cookie)
        assert response.status_code == 200, response.text[:200]
