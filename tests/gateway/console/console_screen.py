"""Reading the console's terminal view in a Playwright page, whichever way it is drawn."""

from __future__ import annotations

from typing import Any

# What a terminal view shows: xterm's DOM rows (one div per row, spaces as U+00A0), or the
# text of the plain <pre> where xterm.js is not served.
_SCREEN_TEXT = """() => {
  const view = document.querySelector("[data-testid=terminal]");
  if (!view) return "";
  const rows = view.querySelector(".xterm-rows");
  const text = rows ? [...rows.children].map((row) => row.textContent).join("\\n") : view.textContent;
  return text.replace(/\\u00a0/g, " ");
}"""


class TerminalScreen:
    """Reads the console's terminal view of ``page`` as text, whichever way it is drawn."""

    def __init__(self, page: Any) -> None:
        self.page = page

    async def text(self) -> str:
        text: str = await self.page.evaluate(_SCREEN_TEXT)
        return text

    async def wait_for(self, wanted: str, timeout_ms: int = 30_000) -> None:
        await self.page.wait_for_function(
            f"(wanted) => ({_SCREEN_TEXT})().includes(wanted)", arg=wanted, timeout=timeout_ms
        )
