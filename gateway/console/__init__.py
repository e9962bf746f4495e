"""The web console at ``/console``: one static page and its modules, no build step.

Contract:
- ``GET /console`` is the page; ``GET /console/static/{name}`` its modules and
  style, shipped as package data and read once when the app is made;
  ``GET /console/config.json`` tells the page whether it must sign in (keys
  configured) and whether a terminal emulator is there; ``GET
  /console/vendor/xterm/{name}`` serves xterm.js from the system
  (``console_xterm_dir``, Debian's libjs-xterm), 404 when no usable build is
  installed - the page then shows terminals as plain text.
- None of these routes carries data of any user, so they need no key; every
  call the page makes for data goes to the API with the key (header, or the
  WebSocket subprotocol of :mod:`gateway.wsauth`) and meets the same Host and
  Origin checks as any client (the page is same-origin).
- Every answer carries a strict Content-Security-Policy: scripts, styles and
  connections only from the gateway itself, no inline script, no framing. The
  page renders what sandboxes send as text only (``textContent``), never HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from gateway.settings import Settings

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
#: Smaller than any browser build of xterm.js: Debian bookworm's libjs-xterm 3.8.1 ships a
#: 288-byte stub that require()s modules it does not ship, which would only raise in the page.
_XTERM_MIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str

    def response(self) -> Response:
        return Response(self.body, media_type=self.media_type, headers=_HEADERS)


def _assets(directory: Path) -> dict[str, Asset]:
    return {
        path.name: Asset(path.read_bytes(), _TYPES[path.suffix])
        for path in sorted(directory.iterdir())
        if path.suffix in _TYPES
    }


def find_xterm(directory: Path) -> dict[str, Asset]:
    """``xterm.js`` and ``xterm.css`` from ``directory`` when both are there and the script is
    a browser build; otherwise nothing."""
    script, style = directory / "xterm.js", directory / "xterm.css"
    try:
        if script.stat().st_size < _XTERM_MIN_BYTES or not style.is_file():
            return {}
        return {
            "xterm.js": Asset(script.read_bytes(), _TYPES[".js"]),
            "xterm.css": Asset(style.read_bytes(), _TYPES[".css"]),
        }
    except OSError:
        return {}


def console_router(settings: Settings) -> APIRouter:
    """The console's routes; the files are read here, once (never on the event loop)."""
    static = _assets(STATIC)
    xterm = find_xterm(Path(settings.console_xterm_dir))
    page = static.pop("index.html")
    router = APIRouter(tags=["console"])

    @router.get("/console", response_class=Response, summary="The web console (HTML)")
    async def console_page() -> Response:
        return page.response()

    @router.get("/console/config.json", summary="What the console page needs to know")
    async def console_config(request: Request) -> JSONResponse:
        """``sign_in``: keys are configured (otherwise local mode: no key);
        ``xterm``: a terminal emulator is served under ``/console/vendor/xterm/``."""
        local = request.app.state.gateway.auth.local_mode
        return JSONResponse({"sign_in": not local, "xterm": bool(xterm)}, headers=_HEADERS)

    @router.get("/console/static/{name}", response_class=Response, include_in_schema=False)
    async def console_static(name: str) -> Response:
        return _found(static, name).response()

    @router.get("/console/vendor/xterm/{name}", response_class=Response, include_in_schema=False)
    async def console_xterm(name: str) -> Response:
        return _found(xterm, name).response()

    return router


def _found(assets: dict[str, Asset], name: str) -> Asset:
    asset = assets.get(name)
    if asset is None:
        raise HTTPException(404, f"no console file {name!r}")
    return asset
