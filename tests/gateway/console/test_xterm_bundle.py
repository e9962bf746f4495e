"""The xterm.js linker: which modules it reads, how a require() is resolved (relative paths,
``.js`` or not, a directory's index), that a missing or non-relative module fails at link
time, and that the linked script runs: each module once, cycles as in Node, the entry's
exports as ``window.Terminal`` (run by Node where it is installed, as Debian's nodejs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.console.xterm_bundle import LinkError, link, modules_in, resolve

KNOWN = {"xterm.js", "Terminal.js", "public/Terminal.js", "common/index.js", "common/data/Sets.js"}


def test_relative_requests_resolve_from_the_importers_directory() -> None:
    assert resolve("xterm.js", "./public/Terminal", KNOWN) == "public/Terminal.js"
    assert resolve("xterm.js", "./public/Terminal.js", KNOWN) == "public/Terminal.js"
    assert resolve("public/Terminal.js", "../Terminal", KNOWN) == "Terminal.js"
    assert resolve("common/data/Sets.js", "../../public/./Terminal", KNOWN) == "public/Terminal.js"
    assert resolve("public/Terminal.js", "./../common/data/Sets", KNOWN) == "common/data/Sets.js"


def test_a_directory_resolves_to_its_index() -> None:
    assert resolve("xterm.js", "./common", KNOWN) == "common/index.js"
    assert resolve("common/data/Sets.js", "..", KNOWN) == "common/index.js"


@pytest.mark.parametrize(
    ("importer", "request_", "why"),
    [
        ("xterm.js", "./Missing", "no module Missing"),
        ("public/Terminal.js", "./Terminal/index", "no module public/Terminal/index"),
        ("xterm.js", "jsdom", "only relative modules"),
        ("xterm.js", "/etc/passwd", "only relative modules"),
        ("public/Terminal.js", "../../outside", "outside the modules"),
    ],
)
def test_what_cannot_be_resolved_fails_naming_it(importer: str, request_: str, why: str) -> None:
    with pytest.raises(LinkError, match=why) as raised:
        resolve(importer, request_, KNOWN)
    assert importer in str(raised.value) and repr(request_) in str(raised.value)


def _write(lib: Path, modules: dict[str, str]) -> None:
    for name, source in modules.items():
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        (lib / name).write_text(source)


def test_tests_maps_and_symlinked_directories_are_not_modules(tmp_path: Path) -> None:
    lib, elsewhere = tmp_path / "lib", tmp_path / "addons"
    _write(lib, {"xterm.js": "", "a/b.js": "", "a/b.test.js": "", "a/b.js.map": "{}", "xterm.css": ""})
    _write(elsewhere, {"fit.js": ""})
    (lib / "addons").symlink_to(elsewhere)
    assert set(modules_in(lib)) == {"xterm.js", "a/b.js"}


def test_a_missing_module_fails_the_link(tmp_path: Path) -> None:
    _write(tmp_path, {"xterm.js": 'require("./a");', "a.js": 'var b = require("./gone");'})
    with pytest.raises(LinkError, match=re.escape("a.js requires './gone'")):
        link(tmp_path)
    with pytest.raises(LinkError, match="no entry module"):
        link(tmp_path, entry="absent.js")


def test_only_modules_reached_from_the_entry_are_linked(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "xterm.js": 'module.exports = require("./sub").name;\n//# sourceMappingURL=xterm.js.map',
            "sub/index.js": 'exports.name = "linked";',
            "unused.js": 'require("jsdom");',
        },
    )
    script = link(tmp_path)
    assert '"sub/index.js"' in script and "unused" not in script and "jsdom" not in script
    assert "sourceMappingURL" not in script


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the script in")
def test_the_linked_script_runs_each_module_once_with_cycles_as_in_node(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "xterm.js": '"use strict";\nvar T = require("./public/Terminal");\n'
            'require("./common");\nmodule.exports = T.Terminal;',
            "public/Terminal.js": 'var counter = require("../common/counter");\ncounter.runs += 1;\n'
            "exports.Terminal = function Terminal() { this.runs = counter.runs; };\n"
            'exports.seenByCycle = require("../common").early;',
            "common/index.js": 'exports.early = "partial";\nrequire("../public/Terminal");\n'
            'require("./counter").runs += 10;',
            "common/counter.js": "exports.runs = 0;",
        },
    )
    script = tmp_path / "bundle.js"
    script.write_text(link(tmp_path))
    runner = (
        "globalThis.window = {}; require('vm').runInThisContext(require('fs').readFileSync("
        f"{json.dumps(str(script))}, 'utf8'));"
        "console.log(JSON.stringify({type: typeof window.Terminal, runs: new window.Terminal().runs}));"
    )
    ran = subprocess.run(["node", "-e", runner], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(ran.stdout) == {"type": "function", "runs": 11}


def test_debians_node_xterm_links_when_installed() -> None:
    lib = Path("/usr/share/nodejs/xterm/lib")
    if not (lib / "xterm.js").is_file():
        pytest.skip("node-xterm is not installed (scripts/test installs it)")
    script = link(lib)
    assert '"public/Terminal.js"' in script and '"renderer/dom/DomRenderer.js"' in script
    assert ".test.js" not in script and 'require("chai")' not in script
