"""Screenshots of the web console's main views, for the README (``scripts/screenshots``).

A real gateway (``run_server``, process runtime, one admin key) runs as a subprocess on a
free loopback port; headless Chromium (Debian's, through Playwright) signs in, creates two
conversations, runs a few commands, uploads a file and saves, under ``docs/``:
``console-list.png`` and ``console-conversation.png``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

import httpx
from benchtools import free_port
from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = os.environ.get("CONVOY_CHROMIUM", "/usr/bin/chromium")
KEY = "screenshot-admin-key"
_RUN = "from gateway.server import run_server; from gateway.settings import Settings; run_server(Settings())"
WAIT_MS = 30_000


async def _wait_up(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        for _ in range(300):
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the gateway did not come up")


async def _create(page: Page, title: str) -> None:
    await page.locator("form.create input[name=title]").fill(title)
    await page.get_by_test_id("new-conversation").click()
    row = page.get_by_test_id("conversation-row").filter(has_text=title)
    await row.locator(".status[data-status=READY]").wait_for(timeout=WAIT_MS)


async def _run(page: Page, command: str, expect: str) -> None:
    await page.get_by_test_id("command-input").fill(command)
    await page.get_by_test_id("run-command").click()
    await page.get_by_test_id("output").filter(has_text=re.compile(expect)).wait_for(timeout=WAIT_MS)


async def shoot(url: str, scratch: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await page.goto(f"{url}/console")
        await page.get_by_test_id("key-input").fill(KEY)
        await page.get_by_test_id("sign-in").click()
        await _create(page, "data cleaning")
        await _create(page, "build and test")
        await page.screenshot(path=DOCS / "console-list.png")

        await (
            page.get_by_test_id("conversation-row")
            .filter(has_text="build and test")
            .get_by_role("link")
            .click()
        )
        await page.get_by_test_id("command-input").wait_for(timeout=WAIT_MS)
        await _run(page, "python3 --version", r"Python 3\.\d+")
        await _run(page, "printf 'line %s\\n' 1 2 3 > report.txt && wc -l report.txt", r"3 report\.txt")
        upload = scratch / "input.csv"
        upload.write_text("name,value\nalpha,1\nbeta,2\n")
        await page.get_by_test_id("upload").set_input_files(str(upload))
        await page.get_by_test_id("file-list").locator("[data-path='input.csv']").wait_for(timeout=WAIT_MS)
        await page.get_by_test_id("file-list").locator("[data-path='report.txt']").wait_for(timeout=WAIT_MS)
        await page.screenshot(path=DOCS / "console-conversation.png")
        await browser.close()


async def main() -> None:
    DOCS.mkdir(exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="convoy-screens-") as scratch:
        env = {
            **{name: value for name, value in os.environ.items() if not name.startswith("CONVOY_")},
            "CONVOY_PORT": str(port),
            "CONVOY_RUNTIME": "process",
            "CONVOY_STATE_DIR": str(Path(scratch) / "state"),
            "CONVOY_INSTALL": f"screens-{port}",
            "CONVOY_ADMIN_KEYS": KEY,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RUN,
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await _wait_up(url)
            await shoot(url, Path(scratch))
            async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client:
                for conversation in (await client.get("/conversation")).json()["results"]:
                    await client.delete(f"/conversation/{conversation['id']}")
        finally:
            process.terminate()
            await process.wait()
    print(f"screenshots saved in {DOCS}")


if __name__ == "__main__":
    asyncio.run(main())
