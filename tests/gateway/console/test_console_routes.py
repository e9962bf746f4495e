"""What the gateway serves for the console: the page and its files under a strict CSP, no
inline script, no HTML built from data, the sign-in switch, and xterm.js (linked from
node-xterm's modules) only when they are there and link, with the one style exception it
needs."""

from __future__ import annotations

import re
from pathlib import Path

from gw_helpers import Harness, keyed

from gateway.console import CONTENT_SECURITY_POLICY, STATIC, load_xterm


async def test_the_page_and_its_modules_carry_a_strict_csp(harness: Harness, tmp_path: Path) -> None:
    async with harness.client(console_xterm_dir=str(tmp_path)) as client:
        page = await client.get("/console")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        for name in re.findall(r'(?:src|href)="/console/static/([^"]+)"', page.text):
            served = await client.get(f"/console/static/{name}")
            assert served.status_code == 200, name
            assert served.headers["content-security-policy"] == policy
        module = await client.get("/console/static/app.js")
        assert module.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/console/static/nothing.js")).status_code == 404
        assert (await client.get("/console/static/..%2F__init__.py")).status_code == 404


async def test_config_says_whether_to_sign_in(harness: Harness) -> None:
    async with harness.client() as client:
        assert (await client.get("/console/config.json")).json()["sign_in"] is False
        # The page is same-origin: its calls meet the local mode's Host and Origin checks like any.
        rebound = {"Host": "console.attacker.example"}
        assert (await client.get("/conversation-count", headers=rebound)).status_code == 403
        foreign = {"Origin": "http://attacker.example"}
        assert (await client.post("/conversation", json={}, headers=foreign)).status_code == 403
    async with harness.client(**keyed()) as client:
        assert (await client.get("/console/config.json")).json()["sign_in"] is True
        assert (await client.get("/console")).status_code == 200, "the page itself holds no data"
        assert (await client.get("/conversation-count")).status_code == 401


def test_no_inline_script_and_no_html_from_data() -> None:
    page = (STATIC / "index.html").read_text()
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", page)), "only scripts from files"
    assert not re.search(r"\son[a-z]+=", page), "no inline handlers"
    for module in STATIC.glob("*.js"):
        text = module.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{module.name} uses {sink}"


def _node_xterm(lib: Path) -> Path:
    """A miniature node-xterm: an entry that requires a module, and the style."""
    (lib / "public").mkdir(parents=True)
    (lib / "xterm.js").write_text('module.exports = require("./public/Terminal").Terminal;')
    (lib / "public" / "Terminal.js").write_text("exports.Terminal = function Terminal() {};")
    (lib / "xterm.css").write_text(".xterm {}")
    return lib


def test_xterm_is_served_only_when_its_modules_link(tmp_path: Path) -> None:
    assert load_xterm(tmp_path / "absent") == {}
    lib = _node_xterm(tmp_path / "lib")
    assert set(load_xterm(lib)) == {"xterm.js", "xterm.css"}
    (lib / "public" / "Terminal.js").unlink()
    assert load_xterm(lib) == {}, "a module that is not there would only raise in the page"


async def test_the_gateway_links_xterm_from_the_system(harness: Harness, tmp_path: Path) -> None:
    lib = _node_xterm(tmp_path / "lib")
    async with harness.client(console_xterm_dir=str(lib)) as client:
        assert (await client.get("/console/config.json")).json()["xterm"] is True
        served = await client.get("/console/vendor/xterm/xterm.js")
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")
        assert '"public/Terminal.js"' in served.text and "window.Terminal = load(" in served.text
        assert (await client.get("/console/vendor/xterm/xterm.css")).text == ".xterm {}"
        assert (await client.get("/console/vendor/xterm/public/Terminal.js")).status_code == 404
        # xterm's DOM renderer writes <style> elements: the page allows those, and nothing else.
        policy = (await client.get("/console")).headers["content-security-policy"]
        assert policy == f"{CONTENT_SECURITY_POLICY}; style-src-elem 'self' 'unsafe-inline'"
        assert served.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    async with harness.client(console_xterm_dir=str(tmp_path / "none")) as client:
        assert (await client.get("/console/config.json")).json()["xterm"] is False
        assert (await client.get("/console/vendor/xterm/xterm.js")).status_code == 404
        assert (await client.get("/console")).headers["content-security-policy"] == CONTENT_SECURITY_POLICY
