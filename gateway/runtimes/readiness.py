"""Readiness: waiting for a started sandbox's agent to answer ``/ready``, which every
runtime's :meth:`~gateway.runtimes.base.Runtime.start` does before it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from gateway.agent_transport import AgentTransport
from gateway.errors import SandboxStartError

__all__ = ["wait_until_ready"]


async def wait_until_ready(
    base_url: str,
    *,
    within: float,
    interval: float = 0.02,
    alive: Callable[[], Awaitable[bool]] | None = None,
) -> None:
    """Poll ``GET {base_url}/ready`` until it answers 200.

    Raises :class:`SandboxStartError` after ``within`` seconds, or as soon as
    ``alive`` (when given) says the sandbox process is gone.
    """
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0, transport=AgentTransport()) as client:
        while True:
            try:
                response = await client.get(f"{base_url}/ready")
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if alive is not None and not await alive():
                raise SandboxStartError("the sandbox exited before its agent was ready")
            if time.monotonic() >= deadline:
                raise SandboxStartError(f"the agent did not answer /ready within {within:g}s")
            await asyncio.sleep(interval)
