"""The console's views of routes other helpers build, in headless Chromium: the pool and
metrics for admins, and the terminal view: keys typed in it reach the PTY as bytes,
what the PTY sends is drawn as text (escape sequences dropped), and it is shown only where
the gateway has terminals. Until the terminal routes are merged, a stand-in with their wire
(POST .../terminal -> 201 {"id"}; WS .../terminal/{tid}?offset=N, binary frames) plays the
PTY: it echoes each byte and answers a line with ``ran: <line>``."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from gw_helpers import ADMIN_KEY, Harness, keyed, uvicorn_options

from gateway.app import create_app

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
_TERMINAL = "/conversation/{conversation_id}/terminal"


def _stand_in() -> APIRouter:
    router = APIRouter()

    @router.get(_TERMINAL)
    async def list_terminals(conversation_id: str) -> dict[str, Any]:
        return {"results": []}

    @router.post(_TERMINAL, status_code=201)
    async def open_terminal(conversation_id: str) -> dict[str, str]:
        return {"id": str(uuid4())}

    @router.websocket(_TERMINAL + "/{terminal_id}")
    async def pty(websocket: WebSocket, conversation_id: str, terminal_id: str) -> None:
        await websocket.accept()
        await websocket.send_bytes(b"\x1b[1;32m$ \x1b[0m")
        line = bytearray()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            for byte in message.get("bytes") or b"":
                if byte == 0x0D:
                    await websocket.send_bytes(b"\r\nran: " + bytes(line) + b"\r\n$ ")
                    line.clear()
                else:
                    line.append(byte)
                    await websocket.send_bytes(bytes([byte]))

    return router


async def _create_ready(page: Any, url: str) -> None:
    await page.goto(f"{url}/console")
    await page.get_by_test_id("key-input").fill(ADMIN_KEY)
    await page.get_by_test_id("sign-in").click()
    await page.locator("form.create input[name=title]").fill("terminal")
    await page.get_by_test_id("new-conversation").click()
    row = page.get_by_test_id("conversation-row").filter(has_text="terminal")
    await row.locator(".status[data-status=READY]").wait_for(timeout=TIMEOUT_MS)
    await row.get_by_role("link").click()


async def _has_terminal_routes(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url) as client:
        return _TERMINAL in (await client.get("/openapi.json", headers=_ADMIN)).json()["paths"]


async def test_typing_into_a_terminal_stand_in(harness: Harness, page: Any) -> None:
    settings = harness.settings.model_copy(update=keyed())
    app: FastAPI = create_app(settings, harness.runtime)
    if not any(_TERMINAL in str(getattr(route, "path", "")) for route in app.routes):
        app.include_router(_stand_in())
    async with harness.run_uvicorn(app, **uvicorn_options(settings)) as url:
        await _create_ready(page, url)
        await page.get_by_test_id("open-terminal").click()
        terminal = page.get_by_test_id("terminal")
        await terminal.wait_for(timeout=TIMEOUT_MS)
        await terminal.click()
        await page.keyboard.type("echo typed")
        await page.keyboard.press("Enter")
        await terminal.get_by_text("ran: echo typed").wait_for(timeout=TIMEOUT_MS)
        text = await terminal.text_content()
        assert "$ echo typed" in text and "[1;32m" not in text and "\x1b" not in text
    assert page.errors == []


async def test_admins_see_the_pool_and_metrics_where_the_gateway_has_them(
    harness: Harness, page: Any
) -> None:
    settings = harness.settings.model_copy(update=keyed())
    app: FastAPI = create_app(settings, harness.runtime)
    documented = app.openapi()["paths"]
    if "/pool" in documented or "/metrics" in documented:
        pytest.skip("this gateway has its own /pool or /metrics")

    @app.get("/pool")
    async def pool() -> dict[str, Any]:
        return {"ready": 2, "target": 3, "note": "<b>text</b>"}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            "# HELP convoy_conversations Conversations by status\n# TYPE convoy_conversations gauge\n"
            'convoy_conversations{status="READY"} 4.0\nconvoy_start_seconds_bucket{le="1"} 3.0\n'
        )

    async with harness.run_uvicorn(app, **uvicorn_options(settings)) as url:
        await page.goto(f"{url}/console")
        await page.get_by_test_id("key-input").fill(ADMIN_KEY)
        await page.get_by_test_id("sign-in").click()
        pool_view = page.get_by_test_id("pool")
        await pool_view.get_by_text('"ready": 2').wait_for(timeout=TIMEOUT_MS)
        assert "<b>text</b>" in await pool_view.text_content()
        rows = page.get_by_test_id("metrics").locator("tr")
        await rows.first.wait_for(timeout=TIMEOUT_MS)
        assert await rows.count() == 1, "buckets are left out"
        assert "convoy_conversations" in await rows.first.text_content()
    assert page.errors == []


async def test_pool_and_metrics_are_hidden_where_absent(harness: Harness, page: Any) -> None:
    async with harness.serve(**keyed()) as url:
        await page.goto(f"{url}/console")
        await page.get_by_test_id("key-input").fill(ADMIN_KEY)
        await page.get_by_test_id("sign-in").click()
        await page.get_by_test_id("new-conversation").wait_for(timeout=TIMEOUT_MS)
        async with httpx.AsyncClient(base_url=url, headers=_ADMIN) as client:
            present = {path: (await client.get(path)).status_code != 404 for path in ("/pool", "/metrics")}
        await page.wait_for_load_state("networkidle")
        assert await page.get_by_test_id("pool").is_visible() == present["/pool"]
        assert await page.get_by_test_id("metrics").is_visible() == present["/metrics"]
    assert page.errors == []


async def test_no_terminal_panel_where_the_gateway_has_no_terminals(harness: Harness, page: Any) -> None:
    async with harness.serve(**keyed()) as url:
        if await _has_terminal_routes(url):
            pytest.skip("this gateway has terminal routes")
        await _create_ready(page, url)
        await page.get_by_test_id("command-input").wait_for(timeout=TIMEOUT_MS)
        await page.wait_for_load_state("networkidle")
        assert not await page.get_by_test_id("open-terminal").is_visible()
    assert page.errors == []
