"""What the agent's own process leaves unimported (its CLI only; never a task's, never a test's).

Every module imported stays resident for the sandbox's whole life, in every
sandbox: these calls keep out code the agent never runs. Each is called by
:mod:`sandbox_agent.__main__` before the first import of what it guards.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def uvicorn_server() -> tuple[type, type]:
    """uvicorn's ``(Config, Server)``, without running ``uvicorn/__init__.py``.

    That file imports ``uvicorn.main``: the command line (click), the reloaders
    and the multiprocess supervisor (multiprocessing), about 3 MB of an idle
    sandbox that a programmatic ``Server`` never uses. The package is
    registered bare (its path, no code run), so its submodules import as usual,
    with the names they import from it (``from uvicorn import Config``).
    """
    if "uvicorn" not in sys.modules:
        spec = importlib.util.find_spec("uvicorn")
        if spec is None:
            raise ImportError("uvicorn is not installed")
        sys.modules["uvicorn"] = _bare_package(spec)
    from uvicorn.config import Config
    from uvicorn.server import Server

    package = sys.modules["uvicorn"]
    setattr(package, "Config", Config)  # noqa: B010 (a bare module: mypy knows the full one)
    setattr(package, "Server", Server)  # noqa: B010
    return Config, Server


def _bare_package(spec: importlib.machinery.ModuleSpec) -> ModuleType:
    """The package of ``spec`` with its ``__path__`` set and its ``__init__`` not run."""
    return importlib.util.module_from_spec(spec)
