"""Make the self-contained agent bundle: this interpreter, its stdlib, its shared libraries, its loader.

    python3 bundle.py DEST          (in the sandbox image's build stage, as root)

DEST (``/opt/convoy``) then holds everything the agent needs on a machine with
no Python and no libc of its own, started through the bundled loader:

    DEST/lib/ld-linux-x86-64.so.2 --library-path DEST/lib DEST/bin/python3 -I -m sandbox_agent ...

- ``bin/python3``: the real interpreter (``python`` links to it, for the relay);
- ``lib/pythonX.Y/``: the stdlib and ``lib-dynload`` (the tests, idle, tkinter,
  ensurepip and the like left out); the interpreter finds it from its own path
  (its landmark ``os.py``), so no ``PYTHONHOME`` is needed;
- ``lib/*.so*``: every shared library the interpreter and its extension modules
  need, as ``ldd`` resolves them here, and the loader itself.

Packages go afterwards into the bundled interpreter's own ``purelib``;
``--libraries DEST`` then adds what their extension modules load. Run once at
image-build time; nothing here runs in a sandbox.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

#: Stdlib parts the agent never imports: about a third of the stdlib's size.
SKIPPED = {
    "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
    "distutils", "unittest", "venv", "__pycache__", "site-packages", "dist-packages",
    "config-3.11-x86_64-linux-gnu",
}  # fmt: skip
#: Extension modules of no use to the agent, each pulling in libraries of its own.
SKIPPED_EXTENSIONS = ("readline", "_curses", "_curses_panel", "nis", "_sqlite3", "_dbm", "_gdbm", "_tkinter")
_LDD_LINE = re.compile(r"=>\s*(/\S+)|^\s*(/\S+)\s+\(")


def shared_libraries(binary: Path) -> set[Path]:
    """What ``ldd`` says ``binary`` loads (the loader included); empty for a static one."""
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    found: set[Path] = set()
    for line in result.stdout.splitlines():
        match = _LDD_LINE.search(line)
        if match:
            found.add(Path(match.group(1) or match.group(2)))
    return found


def is_elf(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) == b"\x7fELF"


def bundle(dest: Path) -> None:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_path("stdlib"))
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    (dest / "bin").mkdir(parents=True)
    lib = dest / "lib"
    shutil.copy2(os.path.realpath(sys.executable), dest / "bin" / "python3")
    (dest / "bin" / "python").symlink_to("python3")
    shutil.copytree(stdlib, lib / version, ignore=lambda _dir, names: SKIPPED & set(names), symlinks=False)
    target_dynload = lib / version / "lib-dynload"
    if not target_dynload.exists():
        shutil.copytree(dynload, target_dynload)
    for path in list(target_dynload.glob("*.so")):
        if path.name.split(".")[0] in SKIPPED_EXTENSIONS:
            path.unlink()
    libraries: set[Path] = set()
    for path in [dest / "bin" / "python3", *target_dynload.glob("*.so")]:
        libraries |= shared_libraries(path)
    for library in libraries:
        shutil.copy2(library.resolve(), lib / library.name)


def add_package_libraries(dest: Path) -> None:
    """The libraries the installed packages' extension modules need that are not bundled yet."""
    lib = dest / "lib"
    for path in dest.rglob("*.so*"):
        if path.is_file() and is_elf(path) and path.parent != lib:
            for library in shared_libraries(path):
                if not (lib / library.name).exists() and not str(library).startswith(str(dest)):
                    shutil.copy2(library.resolve(), lib / library.name)


if __name__ == "__main__":
    if sys.argv[1] == "--libraries":
        add_package_libraries(Path(sys.argv[2]))
    else:
        bundle(Path(sys.argv[1]))
