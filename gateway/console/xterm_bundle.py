"""Links xterm.js's CommonJS modules (Debian's node-xterm) into one browser script.

Debian ships xterm.js as the compiled CommonJS modules of its ``lib/`` directory
(``node-xterm``; ``libjs-xterm`` holds only a stub that ``require()``s them), and
no bundler. A browser has no ``require``, so the gateway links them itself:

- :func:`link` starts at an entry module (``xterm.js``: it exports the
  ``Terminal`` class), reads every module it ``require()``s, transitively, and
  writes one script in which each module is a function ``(module, exports,
  require)`` run once, on first use, like Node does (a cycle sees the exports
  done so far). The script sets ``window.Terminal`` to the entry's exports.
- Every ``require("...")`` is resolved here, at link time, by :func:`resolve`,
  so the browser's ``require`` is only a table lookup: the script never guesses
  at a path and never fetches anything. Only relative requests are linked
  (``./x``, ``../x``, ``.``, ``..``: a file with or without ``.js``, or a
  directory's ``index.js``); anything else (a package name such as
  ``"jsdom"``, a module that is not there) raises :class:`LinkError`, so a
  broken install is found before any page runs it. Tests (``*.test.js``), maps
  and symlinked directories (node-xterm's ``addons`` point elsewhere) are never
  read; a ``sourceMappingURL`` comment is dropped (the maps are not served).
- Requests are found by a regular expression over the source: compiled
  TypeScript writes them as ``require("literal")``; a computed ``require(x)``
  is not linked (and would raise in the page).

Reading the files blocks: call :func:`link` off the event loop.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

ENTRY = "xterm.js"
_REQUIRE = re.compile(r"""\brequire\(\s*(["'])([^"'\n]+)\1\s*\)""")
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)


class LinkError(Exception):
    """The modules cannot be linked: a request names a module that is not there."""


def modules_in(lib: Path) -> dict[str, Path]:
    """The linkable modules under ``lib``: module id (posix path relative to ``lib``, with
    ``.js``) -> file. Tests and symlinked directories are left out."""
    found: dict[str, Path] = {}

    def walk(directory: Path) -> None:
        for path in sorted(directory.iterdir()):
            if path.is_symlink() and path.is_dir():
                continue
            if path.is_dir():
                walk(path)
            elif path.suffix == ".js" and not path.name.endswith(".test.js"):
                found[path.relative_to(lib).as_posix()] = path

    walk(lib)
    return found


def resolve(importer: str, request: str, known: set[str] | dict[str, Path]) -> str:
    """The id of the module ``importer`` (an id) means by ``require(request)``: the request
    taken relative to the importer's directory, as ``X``, ``X.js`` or ``X/index.js``.
    :class:`LinkError` when it is not relative, leaves ``lib`` or names no known module."""
    if request not in (".", "..") and not request.startswith(("./", "../")):
        raise LinkError(f"{importer} requires {request!r}: only relative modules are linked")
    parts: list[str] = []
    for part in (*PurePosixPath(importer).parent.parts, *request.split("/")):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise LinkError(f"{importer} requires {request!r}, outside the modules")
            parts.pop()
        else:
            parts.append(part)
    base = "/".join(parts)
    for candidate in (base, f"{base}.js", f"{base}/index.js"):
        if candidate in known:
            return candidate
    raise LinkError(f"{importer} requires {request!r}: no module {base}(.js|/index.js)")


def link(lib: Path, entry: str = ENTRY) -> str:
    """One browser script holding ``entry`` and every module it needs (see the module's
    contract); :class:`LinkError` or :class:`OSError` when that cannot be done."""
    known = modules_in(lib)
    if entry not in known:
        raise LinkError(f"no entry module {entry} in {lib}")
    sources: dict[str, str] = {}
    tables: dict[str, dict[str, str]] = {}
    pending = [entry]
    while pending:
        module = pending.pop()
        if module in sources:
            continue
        source = _SOURCE_MAP.sub("", known[module].read_text(encoding="utf-8"))
        sources[module] = source
        tables[module] = {request: resolve(module, request, known) for _, request in _REQUIRE.findall(source)}
        pending.extend(tables[module].values())
    definitions = ",\n".join(
        f"{json.dumps(module)}: [function (module, exports, require) {{\n{sources[module]}\n}}, "
        f"{json.dumps(tables[module], sort_keys=True)}]"
        for module in sorted(sources)
    )
    return _SCRIPT.format(count=len(sources), definitions=definitions, entry=json.dumps(entry))


# The loader around the modules: a table lookup per require, each module run once.
_SCRIPT = """\
// xterm.js: {count} CommonJS modules of Debian's node-xterm, linked by the convoy gateway
// (gateway/console/xterm_bundle.py). Sets window.Terminal to the entry module's exports.
(function () {{
  var definitions = {{
{definitions}
  }};
  var loaded = {{}};
  function load(id) {{
    if (Object.prototype.hasOwnProperty.call(loaded, id)) return loaded[id].exports;
    var module = {{ exports: {{}} }};
    loaded[id] = module;
    var definition = definitions[id];
    definition[0].call(module.exports, module, module.exports, function (request) {{
      if (!Object.prototype.hasOwnProperty.call(definition[1], request)) {{
        throw new Error("xterm bundle: " + id + " requires " + request + ", which was not linked");
      }}
      return load(definition[1][request]);
    }});
    return module.exports;
  }}
  window.Terminal = load({entry});
}})();
"""
