"""Browser fixtures: headless Chromium (Debian's ``chromium``, driven by Playwright from PyPI).

Tests marked ``browser`` get a fresh page whose script errors (``pageerror``) and
console errors are collected in ``page.errors``, to be asserted empty. Where
Playwright or ``/usr/bin/chromium`` is missing they are skipped with the reason
(``scripts/test`` installs both, so CI runs them); ``CONVOY_REQUIRE_BROWSER=1``
turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from console_screen import TerminalScreen

CHROMIUM = os.environ.get("CONVOY_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install 'convoy[dev]')"
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (scripts/test installs Debian's chromium)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CONVOY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests required but cannot run: {reason}")
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page in a fresh context; ``page.errors`` lists its script and console errors."""
    context = await browser.new_context(accept_downloads=True)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    def on_console(message: Any) -> None:
        # A 4xx the page expects (a probe for a route this gateway lacks) is logged by the
        # browser, not by a script: not an error of the page.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(f"console: {message.text}")

    opened.on("console", on_console)
    opened.errors = errors
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture
def terminal_screen(page: Any) -> TerminalScreen:
    """The console's terminal view of ``page``, read as text (see :mod:`console_screen`)."""
    return TerminalScreen(page)
