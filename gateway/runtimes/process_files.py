"""What a process sandbox keeps on disk, and the handle it makes (blocking; run in threads).

``<folder>/meta.json`` (0600, replaced atomically): ``{"spec": ..., "pid": ...,
"started": ..., "port": ..., "ready": ..., "paused": ...}`` (only the spec and
``"ready": false`` from the start's first step until its agent is launched:
STARTING); ``<folder>/agent.log``: the agent's stdout and stderr;
``<folder>/claim.json``: a claimed spare's claim, written by its agent (it
wins over the metadata's spare spec). See :mod:`gateway.runtimes.process`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from gateway.runtimes import procfs
from gateway.runtimes.base import DEFAULT_TEMPLATE, ResourceLimits, SandboxHandle, SandboxSpec, SandboxState
from gateway.runtimes.claiming import CLAIM_FILE, claimed_spec
from sandbox_agent.claim import read_claim

META = "meta.json"
LOG = "agent.log"
LOG_TAIL_BYTES = 4000


def spec_to_json(spec: SandboxSpec) -> dict[str, Any]:
    return {
        "conversation_id": str(spec.conversation_id),
        "owner": spec.owner,
        "title": spec.title,
        "token": spec.token,
        "created_at": spec.created_at.isoformat(),
        "env": spec.env,
        "limits": asdict(spec.limits),
        "internet": spec.internet,
        "idle_timeout": spec.idle_timeout,
        "on_idle": spec.on_idle,
        "pool": spec.pool,
        "template": spec.template,
    }


def spec_from_json(data: dict[str, Any]) -> SandboxSpec:
    return SandboxSpec(
        conversation_id=UUID(data["conversation_id"]),
        owner=str(data["owner"]),
        title=str(data["title"]),
        token=str(data["token"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        env=dict(data.get("env") or {}),
        limits=ResourceLimits(**(data.get("limits") or {})),
        internet=bool(data.get("internet", False)),
        idle_timeout=data.get("idle_timeout"),
        on_idle=str(data.get("on_idle") or "delete"),
        pool=data.get("pool"),
        template=str(data.get("template") or DEFAULT_TEMPLATE),
    )


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The folder's metadata; ``None`` when there is none (yet) or it is unreadable."""
    try:
        data = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_meta(folder: Path, data: dict[str, Any]) -> None:
    write_private(folder, META, json.dumps(data))


def write_private(folder: Path, name: str, text: str) -> None:
    """``folder/name`` holding ``text``, readable by this user only, replaced atomically."""
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    tmp.replace(folder / name)


def handle(folder: Path, data: dict[str, Any]) -> SandboxHandle | None:
    """STARTING until its agent was ready, RUNNING while it lives, EXITED (with its last
    output as the reason) once gone; ``None`` for metadata that is not ours."""
    try:
        spec = spec_from_json(data["spec"])
        if "pid" not in data:  # registered by its start, agent not launched yet
            return SandboxHandle(spec=spec, base_url="", state=SandboxState.STARTING)
        process = procfs.ProcessId(int(data["pid"]), data.get("started"))
        port = int(data["port"])
    except (KeyError, TypeError, ValueError):
        return None
    base_url = f"http://127.0.0.1:{port}"
    if spec.pool is not None:
        # A spare whose claim is kept, though the metadata does not say it yet (a gateway
        # that died between the claim and rewriting it, or another gateway's claim).
        claim = read_claim(folder / CLAIM_FILE)
        spec = spec if claim is None else claimed_spec(spec, claim)
    if not procfs.is_alive(process):
        tail = log_tail(folder)
        reason = f"the agent process {process.pid} ended"
        reason += f"; its last output:\n{tail}" if tail else ""
        return SandboxHandle(spec=spec, base_url=base_url, state=SandboxState.EXITED, reason=reason)
    # Metadata written before "ready" existed is of an agent that was ready.
    state = SandboxState.RUNNING if data.get("ready", True) else SandboxState.STARTING
    if data.get("paused"):  # set by pause(), cleared by resume(): see gateway.runtimes.process_freezer
        state = SandboxState.PAUSED
    return SandboxHandle(spec=spec, base_url=base_url, state=state)


def log_tail(folder: Path) -> str:
    try:
        with open(folder / LOG, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return log.read().decode(errors="replace").strip()
    except OSError:
        return ""
