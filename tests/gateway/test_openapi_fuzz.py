"""schemathesis over the gateway's OpenAPI document: no input makes the gateway answer 5xx.

A bounded run (examples, coverage, fuzzing and the stateful phase, which follows the
document's links from a created conversation into its per-conversation routes) against a
real gateway process on the process runtime, with an admin key (so the admin routes
are reached too). The preview routes are left out (they relay to loopback ports). Intended refusals
(4xx) are the point of most cases; only a server error fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from process_agents import kill_agents

from tests.helpers import TIMEOUT, eventually, free_port

_RUN = "from gateway.server import run_server; from gateway.settings import Settings; run_server(Settings())"
_KEY = "fuzz-user-key-0123456789"
#: The whole run is bounded: the issue asks for under two minutes.
_MAX_SECONDS = 75


@pytest.mark.timeout(600)  # ~80 s on a quiet machine (every route fuzzed): 120 s is tight under load
async def test_no_generated_input_gets_a_server_error(tmp_path: Path, agent_env: dict[str, str]) -> None:
    st = shutil.which("st", path=os.path.dirname(sys.executable))
    assert st is not None, "schemathesis is a dev dependency: its `st` command must be installed"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **agent_env,
        "CONVOY_PORT": str(port),
        "CONVOY_STATE_DIR": str(tmp_path / "state"),
        "CONVOY_RUNTIME": "process",
        "CONVOY_INSTALL": "fuzz",
        "CONVOY_ADMIN_KEYS": _KEY,
        "CONVOY_MAX_CONVERSATIONS": "8",
    }
    log = tmp_path / "gateway.log"
    with log.open("ab") as output:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RUN, env=env, stdout=output, stderr=output, cwd=Path(__file__).parents[2]
        )
    try:
        async with httpx.AsyncClient(base_url=base) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(up, within=TIMEOUT, what="the gateway answers /health")
        fuzz = await asyncio.create_subprocess_exec(
            st,
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-time",
            str(_MAX_SECONDS),
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--header",
            f"Authorization: Bearer {_KEY}",
            # Previews relay to whatever listens on a loopback port (on the process runtime, this
            # machine's): not fuzzed; their 502 for a port nobody listens on is the contract.
            "--exclude-path-regex",
            r"/port/\{port\}/\{path\}$",
            "--generation-deterministic",
            "--suppress-health-check",
            "all",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(fuzz.communicate(), timeout=_MAX_SECONDS + 60)
        report = out.decode(errors="replace")
        assert fuzz.returncode == 0, report[-20000:] + "\n--- gateway log ---\n" + log.read_text()[-3000:]
        # It really ran: every operation, every phase (stateful included), and many cases.
        operations = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", report)
        assert operations is not None, report[-3000:]
        selected, tested = operations.groups()
        assert int(selected) >= 20 and tested == selected, report[-3000:]
        assert "✅ Stateful" in report, report[-3000:]
        cases = re.search(r"(\d+) generated, (\d+) passed", report)
        assert cases is not None, report[-3000:]
        generated, passed = cases.groups()
        assert generated == passed and int(generated) >= 300, report[-3000:]
    finally:
        if gateway.returncode is None:
            gateway.terminate()
            try:
                await asyncio.wait_for(gateway.wait(), timeout=30)
            except TimeoutError:
                gateway.kill()
                await gateway.wait()
        kill_agents(tmp_path / "state")
