"""A real gateway in a subprocess (``run_server``, as ``convoy-gateway`` runs it), for the
tests of what only a whole process shows: restarts after SIGKILL, memory, sockets."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.helpers import eventually

ROOT = Path(__file__).parents[2]
_RUN = "from gateway.server import run_server; from gateway.settings import Settings; run_server(Settings())"


def gateway_env(agent_env: dict[str, str], port: int, state: Path, **settings: str) -> dict[str, str]:
    """The environment of a gateway on the process runtime at ``port`` keeping its state in
    ``state``; ``settings`` by their names without the ``CONVOY_`` prefix (``install="x"``)."""
    env = {
        **agent_env,
        "CONVOY_PORT": str(port),
        "CONVOY_STATE_DIR": str(state),
        "CONVOY_RUNTIME": "process",
    }
    return env | {f"CONVOY_{name.upper()}": value for name, value in settings.items()}


@asynccontextmanager
async def gateway_process(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A gateway configured by ``env``, its output appended to ``log``; killed on the way out
    if it still runs."""
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _RUN, env=env, stdout=output, stderr=output, cwd=ROOT
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def gateway_up(client: httpx.AsyncClient) -> None:
    """Waits until the gateway behind ``client`` answers /health."""

    async def up() -> bool:
        try:
            return (await client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(up)
