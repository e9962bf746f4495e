"""The gateway's own calls to a sandbox agent (never proxied for clients).

Both are best effort: an agent that does not answer is treated as having
nothing to say (it is being stopped, or reconciliation will notice it died).
"""

from __future__ import annotations

import logging
from uuid import UUID

import httpx

from gateway.runtimes.base import SandboxHandle
from sandbox_agent.protocol import PASSIVE_HEADER, TOKEN_HEADER, Activity

log = logging.getLogger("convoy.gateway")


def _own(handle: SandboxHandle) -> dict[str, str]:
    """Headers of a call of the gateway's own: no activity of the sandbox (sandbox_agent.activity)."""
    return {TOKEN_HEADER: handle.token, PASSIVE_HEADER: "1"}


async def announce_stopping(http: httpx.AsyncClient, handle: SandboxHandle, reason: str) -> None:
    """Records STOPPING with ``reason`` in the sandbox's event log (``POST /status``),
    so its followers learn why before the sandbox goes."""
    try:
        await http.post(
            f"{handle.base_url}/status",
            json={"status": "STOPPING", "reason": reason},
            headers=_own(handle),
            timeout=5.0,
        )
    except httpx.HTTPError as error:
        log.info("could not record STOPPING in %s: %s", handle.conversation_id, error)


async def has_unfinished_task(http: httpx.AsyncClient, handle: SandboxHandle) -> bool:
    """Whether the sandbox has a task that is pending, running or being cancelled."""
    try:
        response = await http.get(
            f"{handle.base_url}/task",
            params=[("status", "RUNNING"), ("status", "PENDING"), ("status", "CANCELLING"), ("limit", "1")],
            headers=_own(handle),
            timeout=5.0,
        )
        return response.status_code == 200 and bool(response.json().get("results"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


async def agent_activity(http: httpx.AsyncClient, handle: SandboxHandle) -> Activity | None:
    """What the agent served lately (every gateway's requests: ``GET /activity``); ``None``
    when it does not say (an older agent, or one not answering)."""
    try:
        response = await http.get(f"{handle.base_url}/activity", headers=_own(handle), timeout=5.0)
        return Activity.model_validate_json(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


# --- lifecycle: pause, resume and forks --------------------------------------------


async def announce_status(
    http: httpx.AsyncClient, handle: SandboxHandle, status: str, reason: str | None = None
) -> int | None:
    """Records PAUSED (before a freeze) or READY (after a thaw, or a freeze that failed:
    ``reason`` says why) in the sandbox's event log, so followers and the firehose see it
    in order with everything else; its seq (``None`` when the agent did not record it)."""
    body = {"status": status} if reason is None else {"status": status, "reason": reason[:2000]}
    try:
        response = await http.post(
            f"{handle.base_url}/status",
            json=body,
            headers=_own(handle),
            timeout=5.0,
        )
        return int(response.json()["seq"]) if response.status_code == 201 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
        log.info("could not record %s in %s: %s", status, handle.conversation_id, error)
        return None


async def last_seq(http: httpx.AsyncClient, handle: SandboxHandle) -> int:
    """The seq of the sandbox's newest event (0 when it cannot say)."""
    try:
        response = await http.get(f"{handle.base_url}/last-seq", headers=_own(handle), timeout=5.0)
        return int(response.json()["seq"]) if response.status_code == 200 else 0
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return 0


async def announce_forked(http: httpx.AsyncClient, handle: SandboxHandle, origin: UUID, seq: int) -> None:
    """Records the ``Forked`` event (the fork's first after READY)."""
    try:
        await http.post(
            f"{handle.base_url}/forked",
            json={"type": "Forked", "from_conversation_id": str(origin), "from_seq": seq},
            headers=_own(handle),
            timeout=5.0,
        )
    except httpx.HTTPError as error:
        log.warning("could not record Forked in %s: %s", handle.conversation_id, error)
