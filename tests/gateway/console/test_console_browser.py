"""The web console in headless Chromium against a real gateway (uvicorn on loopback, the
process runtime): sign in, create, run a command and see its output, upload and download a
file, delete; local mode has no sign-in; a wrong key is refused; sandbox content is text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_screen import TerminalScreen
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, keyed

from tests.helpers import eventually

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _first(found: Iterator[Any]) -> Any:
    return next(found, None)


async def _sign_in(page: Any, url: str, key: str) -> None:
    await page.goto(f"{url}/console")
    await page.get_by_test_id("key-input").fill(key)
    await page.get_by_test_id("sign-in").click()
    await page.get_by_test_id("new-conversation").wait_for(timeout=TIMEOUT_MS)


async def _create(page: Any, title: str) -> Any:
    """Creates a conversation from the list view and opens it once READY; returns its row."""
    await page.locator("form.create input[name=title]").fill(title)
    await page.get_by_test_id("new-conversation").click()
    row = page.get_by_test_id("conversation-row").filter(has_text=title)
    await row.locator(".status[data-status=READY]").wait_for(timeout=TIMEOUT_MS)
    return row


async def _open(page: Any, row: Any) -> None:
    await row.get_by_role("link").click()
    await (
        page.get_by_test_id("conversation-status")
        .and_(page.locator("[data-status=READY]"))
        .wait_for(timeout=TIMEOUT_MS)
    )


async def _run(page: Any, command: str) -> None:
    await page.get_by_test_id("command-input").fill(command)
    await page.get_by_test_id("run-command").click()


async def test_user_signs_in_runs_a_command_moves_files_and_deletes(
    process_harness: Harness, page: Any, tmp_path: Path
) -> None:
    async with process_harness.serve(**keyed()) as url:
        await _sign_in(page, url, USER_KEYS["alice"])
        row = await _create(page, "console e2e")
        conversation_id = await row.get_attribute("data-id")
        await _open(page, row)

        await _run(page, "echo hello-from-the-console")
        output = page.get_by_test_id("output")
        await output.get_by_text("hello-from-the-console").last.wait_for(timeout=TIMEOUT_MS)
        assert "$ echo hello-from-the-console" in await output.text_content()

        upload = tmp_path / "notes.txt"
        upload.write_bytes(b"uploaded through the browser\n")
        await page.get_by_test_id("upload").set_input_files(str(upload))
        listed = page.get_by_test_id("file-list").locator("[data-path='notes.txt']")
        await listed.wait_for(timeout=TIMEOUT_MS)
        async with page.expect_download() as download_info:
            await listed.get_by_test_id("download").click()
        download = await download_info.value
        assert download.suggested_filename == "notes.txt"
        saved = tmp_path / "downloaded"
        await download.save_as(saved)
        assert saved.read_bytes() == b"uploaded through the browser\n"

        # What a command writes shows up in the browser when the task ends.
        await _run(page, "echo made > made-by-task.txt")
        await (
            page.get_by_test_id("file-list")
            .locator("[data-path='made-by-task.txt']")
            .wait_for(timeout=TIMEOUT_MS)
        )
        await listed.get_by_test_id("delete-file").click()
        await listed.wait_for(state="detached", timeout=TIMEOUT_MS)

        await page.get_by_role("link", name="all conversations").click()
        row = page.get_by_test_id("conversation-row").filter(has_text="console e2e")
        await row.get_by_test_id("delete-conversation").click()
        await row.wait_for(state="detached", timeout=TIMEOUT_MS)
        async with httpx.AsyncClient(base_url=url, headers=_ADMIN) as client:
            assert (await client.get(f"/conversation/{conversation_id}")).status_code == 404
    assert page.errors == []


async def test_drop_uploads_a_file_and_a_task_is_cancelled(process_harness: Harness, page: Any) -> None:
    async with process_harness.serve(**keyed()) as url:
        await _sign_in(page, url, ADMIN_KEY)
        await _open(page, await _create(page, "drop"))
        transfer = await page.evaluate_handle(
            """() => { const t = new DataTransfer();
                t.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"})); return t; }"""
        )
        await page.get_by_test_id("drop-zone").dispatch_event("drop", {"dataTransfer": transfer})
        await (
            page.get_by_test_id("file-list").locator("[data-path='dropped.txt']").wait_for(timeout=TIMEOUT_MS)
        )

        await _run(page, "sleep 600")
        task = page.get_by_test_id("task-row").filter(has_text="sleep 600")
        await task.get_by_text("RUNNING").wait_for(timeout=TIMEOUT_MS)
        await task.get_by_test_id("cancel-task").click()
        await task.get_by_text("CANCELLED").wait_for(timeout=TIMEOUT_MS)
        assert not await task.get_by_test_id("cancel-task").is_visible()
    assert page.errors == []


async def test_an_event_holding_markup_shows_as_text(process_harness: Harness, page: Any) -> None:
    async with process_harness.serve(**keyed()) as url:
        await _sign_in(page, url, ADMIN_KEY)
        row = await _create(page, "xss")
        conversation_id = await row.get_attribute("data-id")
        await _open(page, row)
        payload = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
        async with httpx.AsyncClient(base_url=url, headers=_ADMIN) as client:
            posted = await client.post(
                f"/conversation/{conversation_id}/event",
                json={"detail": {"type": "<b>note</b>", "text": payload}},
            )
            assert posted.status_code == 201, posted.text
        event = page.get_by_test_id("event").filter(has_text="window.__pwned = 1")
        await event.wait_for(timeout=TIMEOUT_MS)
        assert "<script>" in await event.text_content()
        assert "<b>note</b>" in await event.text_content()
        assert await page.locator("ol.events script, ol.events img, ol.events b").count() == 0
        assert await page.evaluate("window.__pwned") is None
    assert page.errors == []


async def test_local_mode_has_no_sign_in(process_harness: Harness, page: Any) -> None:
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    async with process_harness.serve() as url:
        await page.goto(f"{url}/console")
        await page.get_by_test_id("new-conversation").wait_for(timeout=TIMEOUT_MS)
        assert await page.get_by_test_id("key-input").count() == 0
        # The live list follows the firehose over a WebSocket (subprotocol "convoy", no key).
        firehose = await eventually(
            lambda: _first(socket for socket in sockets if socket.url.endswith("/firehose/")), what="firehose"
        )
        async with firehose.expect_event(
            "framereceived", lambda frame: "ConversationStatusUpdate" in str(frame), timeout=TIMEOUT_MS
        ):
            row = await _create(page, "local")
        await _open(page, row)
        await _run(page, "echo local-ok")
        await page.get_by_test_id("output").get_by_text("local-ok").last.wait_for(timeout=TIMEOUT_MS)
    assert page.errors == []


async def test_a_wrong_key_is_refused_with_a_message(process_harness: Harness, page: Any) -> None:
    async with process_harness.serve(**keyed()) as url:
        await page.goto(f"{url}/console")
        await page.get_by_test_id("key-input").fill("not-a-key")
        await page.get_by_test_id("sign-in").click()
        error = page.get_by_test_id("error")
        await error.wait_for(timeout=TIMEOUT_MS)
        assert "not valid" in await error.text_content()
        assert await page.get_by_test_id("key-input").is_visible()
        assert await page.evaluate("sessionStorage.getItem('convoy.key')") is None
    assert page.errors == []


async def test_terminal_takes_typing_fits_and_resumes_after_a_cut(
    process_harness: Harness, page: Any, terminal_screen: TerminalScreen
) -> None:
    """A real PTY behind the gateway's terminal routes,
    drawn by xterm.js where node-xterm is installed (read from xterm's DOM rows): typing runs,
    the fitted grid reaches the PTY, and a cut socket resumes at the offset reached (the
    output is not drawn twice). Playwright stands between page and gateway to cut it."""
    sockets: list[Any] = []

    async def relay(route: Any) -> None:
        sockets.append(route)
        route.connect_to_server()

    await page.route_web_socket(re.compile(r"/terminal/[0-9a-f-]{36}\?offset="), relay)
    async with process_harness.serve(**keyed()) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            paths = (await client.get("/openapi.json", headers=_ADMIN)).json()["paths"]
            xterm = (await client.get("/console/config.json")).json()["xterm"]
        assert "/conversation/{conversation_id}/terminal" in paths
        await _sign_in(page, url, ADMIN_KEY)
        await _open(page, await _create(page, "terminal"))
        await page.get_by_test_id("open-terminal").click()
        terminal = page.get_by_test_id("terminal")
        await terminal.wait_for(timeout=TIMEOUT_MS)
        assert await terminal.locator(".xterm").count() == (1 if xterm else 0)
        await terminal.click()
        await page.keyboard.type("echo typed-$((6*7))")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("typed-42", TIMEOUT_MS)
        if xterm:
            rows = await terminal.locator(".xterm-rows > div").count()
            await page.keyboard.type("stty size")
            await page.keyboard.press("Enter")

            async def sized() -> bool:
                text = await terminal_screen.text()
                return re.search(rf"^{rows} [0-9]+ *$", text, re.MULTILINE) is not None

            await eventually(sized, what=f"stty size answers {rows} rows")

        await sockets[0].close(code=1001, reason="cut by the test")

        async def reconnected() -> bool:
            return len(sockets) == 2

        await eventually(reconnected, what="the page reconnects")
        assert not sockets[1].url.endswith("?offset=0")
        await page.keyboard.type("echo after-$((6*8))")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("after-48", TIMEOUT_MS)
        assert (await terminal_screen.text()).count("typed-42") == 1
    assert page.errors == []


async def test_the_event_stream_resumes_after_a_reconnect(harness: Harness, page: Any) -> None:
    """The page's socket is cut (Playwright stands between page and gateway): the console
    reconnects with ``after_seq`` of the last event it showed, and misses and repeats nothing."""
    routes: list[Any] = []

    async def relay(route: Any) -> None:
        routes.append(route)
        route.connect_to_server()

    await page.route_web_socket(re.compile(r"/conversation/[0-9a-f-]{36}\?after_seq="), relay)
    async with harness.serve() as url, httpx.AsyncClient(base_url=url) as client:
        await page.goto(f"{url}/console")
        row = await _create(page, "resume")
        conversation_id = await row.get_attribute("data-id")
        await _open(page, row)
        events = page.get_by_test_id("event")

        async def note(text: str) -> None:
            posted = await client.post(
                f"/conversation/{conversation_id}/event", json={"detail": {"type": text}}
            )
            assert posted.status_code == 201, posted.text

        await note("before-the-cut")
        await events.filter(has_text="before-the-cut").wait_for(timeout=TIMEOUT_MS)
        shown = await events.count()
        await routes[0].close(code=1001, reason="cut by the test")
        await note("during-the-gap")
        await events.filter(has_text="during-the-gap").wait_for(timeout=TIMEOUT_MS)
        assert len(routes) >= 2 and routes[-1].url.endswith(f"after_seq={shown}")
        assert await events.filter(has_text="before-the-cut").count() == 1
        assert await events.count() == shown + 1
    assert page.errors == []
