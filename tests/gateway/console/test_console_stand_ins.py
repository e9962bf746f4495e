"""The console's views of routes other helpers build, in headless Chromium: the pool and
metrics for admins, and the terminal view, drawn by xterm.js (linked by the gateway from
Debian's node-xterm) or, without it, as plain text: keys typed in it reach the PTY as bytes,
what the PTY sends is drawn, the grid is fitted to its box and the PTY told by a resize
frame, a cut socket is resumed at the byte offset reached, and it is shown only where the
gateway has terminals. Until the terminal routes are merged, a stand-in with their wire
(POST .../terminal -> 201 {"id"}; WS .../terminal/{tid}?offset=N, binary frames both ways,
JSON text frames) plays the PTY: it echoes each byte, answers a line with ``ran: <line>``,
keeps its output to replay from the offset asked for, and cuts the socket after ``cut``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from console_screen import TerminalScreen
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from gw_helpers import ADMIN_KEY, Harness, keyed, uvicorn_options

from gateway.app import create_app
from gateway.console import load_xterm
from gateway.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
_TERMINAL = "/conversation/{conversation_id}/terminal"
_PROMPT = b"\x1b[1;32m$ \x1b[0m"


@dataclass
class StandInPty:
    """What the stand-in saw: the bytes typed, the text frames, the offset of each connection."""

    output: bytearray = field(default_factory=bytearray)
    typed: bytearray = field(default_factory=bytearray)
    controls: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)


def _stand_in(pty: StandInPty) -> APIRouter:
    router = APIRouter()

    @router.get(_TERMINAL)
    async def list_terminals(conversation_id: str) -> dict[str, Any]:
        return {"results": []}

    @router.post(_TERMINAL, status_code=201)
    async def open_terminal(conversation_id: str) -> dict[str, str]:
        pty.output[:] = _PROMPT
        return {"id": str(uuid4())}

    @router.websocket(_TERMINAL + "/{terminal_id}")
    async def serve_pty(
        websocket: WebSocket, conversation_id: str, terminal_id: str, offset: int = 0
    ) -> None:
        async def out(data: bytes) -> None:
            pty.output.extend(data)
            await websocket.send_bytes(data)

        await websocket.accept()
        pty.offsets.append(offset)
        await websocket.send_bytes(bytes(pty.output[offset:]))
        line = bytearray()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text"):
                pty.controls.append(json.loads(message["text"]))
            for byte in message.get("bytes") or b"":
                pty.typed.append(byte)
                if byte != 0x0D:
                    line.append(byte)
                    await out(bytes([byte]))
                    continue
                await out(b"\r\nran: " + bytes(line) + b"\r\n" + _PROMPT)
                if line == b"cut":
                    await websocket.close(1011)
                    return
                line.clear()

    return router


def _with_stand_in(harness: Harness, pty: StandInPty, **overrides: Any) -> tuple[FastAPI, Settings]:
    settings = harness.settings.model_copy(update={**keyed(), **overrides})
    app: FastAPI = create_app(settings, harness.runtime)
    # The routes are not all at the top of app.routes; the documented paths say what there is.
    if _TERMINAL in app.openapi()["paths"]:
        pytest.skip("this gateway has its own terminal routes (test_console_browser drives them)")
    app.openapi_schema = None
    app.include_router(_stand_in(pty))
    return app, settings


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


async def test_xterm_draws_the_terminal_fits_it_and_resumes_after_a_cut(
    harness: Harness, page: Any, terminal_screen: TerminalScreen
) -> None:
    if not load_xterm(Path(harness.settings.console_xterm_dir)):
        pytest.fail(f"no node-xterm in {harness.settings.console_xterm_dir} (scripts/test installs it)")
    pty = StandInPty()
    app, settings = _with_stand_in(harness, pty)
    async with harness.run_uvicorn(app, **uvicorn_options(settings)) as url:
        await _create_ready(page, url)
        await page.get_by_test_id("open-terminal").click()
        await page.locator("[data-testid=terminal] .xterm").wait_for(timeout=TIMEOUT_MS)
        await terminal_screen.wait_for("$ ")
        await page.get_by_test_id("terminal").click()
        await page.keyboard.type("echo hi")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("ran: echo hi")
        assert bytes(pty.typed) == b"echo hi\r"
        text = await terminal_screen.text()
        assert "$ echo hi" in text and "[1;32m" not in text

        # Fitted to its box: the PTY was told the grid the page draws.
        drawn_rows = await page.locator("[data-testid=terminal] .xterm-rows > div").count()
        assert pty.controls and pty.controls[-1]["type"] == "resize"
        assert pty.controls[-1]["rows"] == drawn_rows and (pty.controls[-1]["cols"], drawn_rows) != (100, 30)

        # The stand-in cuts the socket: the page comes back at the offset it reached.
        await page.keyboard.type("cut")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("ran: cut")
        reached = len(pty.output)

        async def reconnected() -> bool:
            return len(pty.offsets) == 2

        await eventually(reconnected, what="the page reconnects")
        assert pty.offsets == [0, reached]
        await page.keyboard.type("echo again")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("ran: echo again")
        text = await terminal_screen.text()
        assert text.count("ran: echo hi") == 1 and text.count("ran: cut") == 1, text
    assert page.errors == []


async def test_the_text_terminal_where_xterm_is_not_installed(
    harness: Harness, page: Any, terminal_screen: TerminalScreen, tmp_path: Path
) -> None:
    pty = StandInPty()
    app, settings = _with_stand_in(harness, pty, console_xterm_dir=str(tmp_path / "none"))
    async with harness.run_uvicorn(app, **uvicorn_options(settings)) as url:
        await _create_ready(page, url)
        await page.get_by_test_id("open-terminal").click()
        terminal = page.locator("pre[data-testid=terminal]")
        await terminal.wait_for(timeout=TIMEOUT_MS)
        await terminal.click()
        await page.keyboard.type("echo typed")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("ran: echo typed")
        text = await terminal_screen.text()
        assert "$ echo typed" in text and "[1;32m" not in text and "\x1b" not in text
        assert bytes(pty.typed) == b"echo typed\r"
        assert await page.locator(".xterm").count() == 0
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
