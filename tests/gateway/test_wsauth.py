"""A key in ``Sec-WebSocket-Protocol`` (gateway.wsauth): browsers authenticate WebSockets
without putting the key in a URL; the gateway answers the ``convoy`` subprotocol, never the key."""

from __future__ import annotations

import base64

import pytest
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, close_code, create_ready, keyed, recv_json, ws_connect

from gateway.wsauth import key_from_subprotocols
from sandbox_agent.protocol import WS_CLOSE_FORBIDDEN, WS_CLOSE_NOT_FOUND, WS_CLOSE_UNAUTHORIZED


def _offer(key: str, padded: bool = False) -> list[str]:
    encoded = base64.urlsafe_b64encode(key.encode()).decode()
    return ["convoy", "convoy.key." + (encoded if padded else encoded.rstrip("="))]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("convoy", None),
        ("convoy, convoy.key.a2V5LWFsaWNl", "key-alice"),
        ("convoy.key.a2V5LWE=", "key-a"),  # padding is optional
        ("convoy.key.a2V5LWE", "key-a"),
        ("convoy.key.%%%", None),
        ("convoy.key.", None),
        ("convoy.key.__8", None),  # not UTF-8
    ],
)
def test_key_from_subprotocols(header: str | None, expected: str | None) -> None:
    assert key_from_subprotocols(header) == expected


async def test_a_key_in_the_subprotocol_follows_a_conversation(harness: Harness) -> None:
    async with harness.client(**keyed()) as client:
        alice = USER_KEYS["alice"]
        cid = await create_ready(client, alice)
        url = str(client.base_url)
        ws = await ws_connect(url, f"/conversation/{cid}", subprotocols=_offer(alice))
        try:
            assert ws.subprotocol == "convoy", "the key entry is never echoed"
            assert (await recv_json(ws))["detail"]["status"] == "READY"
        finally:
            await ws.close()
        padded = await ws_connect(url, "/firehose/", subprotocols=_offer(ADMIN_KEY, padded=True))
        await padded.close()
        assert padded.close_code == 1000


@pytest.mark.parametrize(
    ("key", "path", "code"),
    [
        ("wrong", "/conversation/{cid}", WS_CLOSE_UNAUTHORIZED),
        (USER_KEYS["bob"], "/conversation/{cid}", WS_CLOSE_NOT_FOUND),
        (USER_KEYS["alice"], "/firehose/", WS_CLOSE_FORBIDDEN),
    ],
)
async def test_a_subprotocol_key_is_held_to_the_same_rules(
    harness: Harness, key: str, path: str, code: int
) -> None:
    async with harness.client(**keyed()) as client:
        cid = await create_ready(client, USER_KEYS["alice"])
        ws = await ws_connect(str(client.base_url), path.format(cid=cid), subprotocols=_offer(key))
        assert await close_code(ws) == code


async def test_plain_http_does_not_read_the_subprotocol_header(harness: Harness) -> None:
    async with harness.client(**keyed()) as client:
        header = {"Sec-WebSocket-Protocol": ", ".join(_offer(ADMIN_KEY))}
        assert (await client.get("/conversation-count", headers=header)).status_code == 401


async def test_sockets_without_the_convoy_subprotocol_are_answered_without_one(harness: Harness) -> None:
    async with harness.client(**keyed()) as client:
        ws = await ws_connect(str(client.base_url), "/firehose/", ADMIN_KEY)
        assert ws.subprotocol is None
        await ws.close()
