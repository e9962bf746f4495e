"""The console's admin panels and its plain-text terminal, in headless Chromium against a real
gateway: an admin sees the pool and the metrics at a glance (a user sees neither), and where
xterm.js is not installed the terminal is a plain-text view whose keys reach the real PTY and
whose output is drawn without escape sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from console_screen import TerminalScreen
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, keyed

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000


async def _sign_in(page: Any, url: str, key: str) -> None:
    await page.goto(f"{url}/console")
    await page.get_by_test_id("key-input").fill(key)
    await page.get_by_test_id("sign-in").click()
    await page.get_by_test_id("new-conversation").wait_for(timeout=TIMEOUT_MS)


async def test_admins_see_the_pool_and_the_metrics_users_do_not(harness: Harness, page: Any) -> None:
    async with harness.serve(**keyed(pool_size=1)) as url:
        await _sign_in(page, url, ADMIN_KEY)
        pool_view = page.get_by_test_id("pool")
        await pool_view.get_by_text('"ready": 1').wait_for(timeout=TIMEOUT_MS)
        rows = page.get_by_test_id("metrics").locator("tr")
        await rows.first.wait_for(timeout=TIMEOUT_MS)
        shown = " ".join(await rows.all_text_contents())
        assert "convoy_conversations" in shown and "_bucket" not in shown, shown
        await page.evaluate("sessionStorage.clear()")
        await _sign_in(page, url, USER_KEYS["alice"])
        await page.wait_for_load_state("networkidle")
        assert not await page.get_by_test_id("pool").is_visible()
        assert not await page.get_by_test_id("metrics").is_visible()
    assert page.errors == []


async def test_the_text_terminal_where_xterm_is_not_installed(
    process_harness: Harness, page: Any, terminal_screen: TerminalScreen, tmp_path: Path
) -> None:
    async with process_harness.serve(**keyed(console_xterm_dir=str(tmp_path / "none"))) as url:
        await _sign_in(page, url, ADMIN_KEY)
        await page.locator("form.create input[name=title]").fill("plain")
        await page.get_by_test_id("new-conversation").click()
        row = page.get_by_test_id("conversation-row").filter(has_text="plain")
        await row.locator(".status[data-status=READY]").wait_for(timeout=TIMEOUT_MS)
        await row.get_by_role("link").click()
        await page.get_by_test_id("open-terminal").click()
        terminal = page.locator("pre[data-testid=terminal]")
        await terminal.wait_for(timeout=TIMEOUT_MS)
        await terminal.click()
        await page.keyboard.type("printf '\\033[1;32mgreen-%s\\033[0m\\n' $((6*7))")
        await page.keyboard.press("Enter")
        await terminal_screen.wait_for("green-42", TIMEOUT_MS)
        text = await terminal_screen.text()
        assert "\x1b" not in text and "[1;32m" not in text.replace("\\033[1;32m", ""), text
        assert await page.locator(".xterm").count() == 0
    assert page.errors == []
