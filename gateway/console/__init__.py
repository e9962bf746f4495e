"""The web console at ``/console``: one static page and its modules, no build step.

Contract:
- ``GET /console`` is the page; ``GET /console/static/{name}`` its modules and
  style, shipped as package data and read once when the app is made;
  ``GET /console/config.json`` tells the page whether it must sign in (keys
  configured) and whether a terminal emulator is there; ``GET
  /console/vendor/xterm/xterm.js`` is xterm.js, linked on first use from the
  CommonJS modules in ``console_xterm_dir`` (Debian's node-xterm, see
  :mod:`gateway.console.xterm_bundle`), and ``.../xterm.css`` its style; both
  404 when node-xterm is not installed or does not link - the page then shows
  terminals as plain text.
- None of these routes carries data of any user, so they need no key; every
  call the page makes for data goes to the API with the key (header, or the
  WebSocket subprotocol of :mod:`gateway.wsauth`) and meets the same Host and
  Origin checks as any client (the page is same-origin).
- Every answer carries a strict Content-Security-Policy: scripts, styles and
  connections only from the gateway itself, no inline script, no framing. The
  page renders what sandboxes send as text only (``textContent``), never HTML.
  One exception, only while xterm.js is served: the page may hold ``<style>``
  elements (``style-src-elem 'unsafe-inline'``), because xterm's DOM renderer
  writes its cell sizes (measured in the page) and colours into ``<style>``
  elements it makes; style attributes stay refused and scripts stay ``'self'``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from gateway.console.xterm_bundle import LinkError, link
from gateway.settings import Settings

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The page's policy while xterm.js is served (see the module's contract).
CONTENT_SECURITY_POLICY_WITH_XTERM = f"{CONTENT_SECURITY_POLICY}; style-src-elem 'self' 'unsafe-inline'"
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
#: Where xterm.css is, from the modules' directory: beside them (xterm 3), or the package's css/.
_XTERM_STYLES = ("xterm.css", "../css/xterm.css")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    policy: str = CONTENT_SECURITY_POLICY

    def response(self) -> Response:
        return Response(
            self.body,
            media_type=self.media_type,
            headers={**_HEADERS, "Content-Security-Policy": self.policy},
        )


def _assets(directory: Path) -> dict[str, Asset]:
    return {
        path.name: Asset(path.read_bytes(), _TYPES[path.suffix])
        for path in sorted(directory.iterdir())
        if path.suffix in _TYPES
    }


def load_xterm(lib: Path) -> dict[str, Asset]:
    """``xterm.js`` (linked from the modules in ``lib``) and ``xterm.css``; nothing when
    node-xterm is not there or its modules do not link (logged). Blocks: run it in a thread."""
    styles = [lib / name for name in _XTERM_STYLES if (lib / name).is_file()]
    if not (lib / "xterm.js").is_file() or not styles:
        log.info("console: no xterm.js modules and style in %s; terminals are shown as text", lib)
        return {}
    try:
        script = link(lib).encode()
        style = styles[0].read_bytes()
    except (LinkError, OSError, UnicodeDecodeError) as error:
        log.warning("console: xterm.js in %s cannot be linked (%s); terminals are shown as text", lib, error)
        return {}
    return {"xterm.js": Asset(script, _TYPES[".js"]), "xterm.css": Asset(style, _TYPES[".css"])}


class XtermAssets:
    """:func:`load_xterm`, run once (in a thread, on first use) and kept."""

    def __init__(self, lib: Path) -> None:
        self._lib = lib
        self._lock = asyncio.Lock()
        self._assets: dict[str, Asset] | None = None

    async def get(self) -> dict[str, Asset]:
        if self._assets is None:
            async with self._lock:
                if self._assets is None:
                    self._assets = await asyncio.to_thread(load_xterm, self._lib)
        return self._assets


def console_router(settings: Settings) -> APIRouter:
    """The console's routes; its own files are read here, once (never on the event loop)."""
    static = _assets(STATIC)
    xterm = XtermAssets(Path(settings.console_xterm_dir))
    page = static.pop("index.html")
    page_with_xterm = Asset(page.body, page.media_type, CONTENT_SECURITY_POLICY_WITH_XTERM)
    router = APIRouter(tags=["console"])

    @router.get("/console", response_class=Response, summary="The web console (HTML)")
    async def console_page() -> Response:
        return (page_with_xterm if await xterm.get() else page).response()

    @router.get("/console/config.json", summary="What the console page needs to know")
    async def console_config(request: Request) -> JSONResponse:
        """``sign_in``: keys are configured (otherwise local mode: no key);
        ``xterm``: a terminal emulator is served under ``/console/vendor/xterm/``."""
        local = request.app.state.gateway.auth.local_mode
        return JSONResponse({"sign_in": not local, "xterm": bool(await xterm.get())}, headers=_HEADERS)

    @router.get("/console/static/{name}", response_class=Response, include_in_schema=False)
    async def console_static(name: str) -> Response:
        return _found(static, name).response()

    @router.get("/console/vendor/xterm/{name}", response_class=Response, include_in_schema=False)
    async def console_xterm(name: str) -> Response:
        return _found(await xterm.get(), name).response()

    return router


def _found(assets: dict[str, Asset], name: str) -> Asset:
    asset = assets.get(name)
    if asset is None:
        raise HTTPException(404, f"no console file {name!r}")
    return asset
