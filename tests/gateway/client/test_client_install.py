"""The client installs light: ``pip install convoy`` (no extras) gives a working client that needs
none of the server's or the command line's packages, and importing it loads none of them."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CLIENT = ROOT / "gateway" / "client"

#: The distributions only [server] and [cli] bring.
EXTRAS_DISTRIBUTIONS = [
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "aiodocker",
    "pydantic-settings",
    "python-multipart",
    "typer",
    "rich",
]
#: Their import names (python-multipart also installs the old name ``multipart``).
EXTRAS_MODULES = [name.replace("-", "_") for name in EXTRAS_DISTRIBUTIONS] + ["multipart"]

#: Run by the fresh environment's interpreter: build both clients, make one request through a
#: MockTransport, then report what is installed and what got imported.
PROBE = f"""
import asyncio, importlib.metadata, importlib.util, json, sys
import httpx
import gateway.client
from gateway.client import AsyncConvoyClient, ConvoyClient

def handler(request):
    return httpx.Response(200, json={{"count": 3}})

with ConvoyClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler)) as client:
    assert client.count() == 3

async def main():
    async with AsyncConvoyClient("http://127.0.0.1:9", "key") as client:
        assert client.base_url == "http://127.0.0.1:9"

asyncio.run(main())

def installed(name):
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False

print(json.dumps({{
    "client": gateway.client.__file__,
    "findable": [m for m in {EXTRAS_MODULES!r} if importlib.util.find_spec(m) is not None],
    "loaded": [m for m in {EXTRAS_MODULES!r} if m in sys.modules],
    "installed": [d for d in {EXTRAS_DISTRIBUTIONS!r} if installed(d)],
}}))
"""


def _isolated_env() -> dict[str, str]:
    """The environment without anything that would put this checkout on the path."""
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}


def test_only_the_websocket_module_imports_websockets() -> None:
    importers = []
    for module in sorted(CLIENT.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "websockets" or name.startswith("websockets.") for name in names):
                importers.append(module.name)
    assert sorted(set(importers)) == ["_websocket.py"]


def test_importing_the_client_loads_no_server_or_cli_module() -> None:
    # httpx imports rich and click for its command line when they are installed (they are here,
    # with [cli]): what the core packages load themselves is the baseline.
    probe = (
        "import json, sys; import httpx, pydantic, websockets; before = set(sys.modules); "
        "import gateway.client; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=_isolated_env() | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    assert [m for m in loaded if m.split(".")[0] in EXTRAS_MODULES] == []
    ours = {m for m in loaded if m.split(".")[0] in ("gateway", "sandbox_agent")}
    # The wire models and what they are made of (constants, egress entries): plain pydantic.
    light = {
        "gateway",
        "gateway.egress",
        "gateway.models",
        "sandbox_agent",
        "sandbox_agent.contract",
        "sandbox_agent.protocol",
        "sandbox_agent.protocol_events",  # protocol.py's models, split by noun
        "sandbox_agent.protocol_tasks",
        "sandbox_agent.protocol_terminals",
    }
    assert {m for m in ours if not m.startswith("gateway.client")} == light


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pip_install_without_extras_gives_a_working_light_client(tmp_path: Path) -> None:
    # A copy of the sources: building in the checkout would leave build/ and *.egg-info behind.
    source = tmp_path / "convoy"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("gateway", "sandbox_agent"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # This interpreter's pip installs into the new environment (no pip bootstrap there); pip's
    # own cache is used as usual.
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(source)],
        check=True,
        timeout=540,
        env=_isolated_env(),
    )
    result = subprocess.run(
        [str(python), "-I", "-c", PROBE],
        cwd=tmp_path,
        env=_isolated_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["client"]).is_relative_to(venv), report["client"]
    assert report["installed"] == []
    assert report["findable"] == []
    assert report["loaded"] == []
