"""Helpers for the gateway tests: polling, WebSocket frames, conversations that are READY,
what a runtime still holds of a conversation. HTTP on a plain socket is raw_http.py; the
process runtime's agent processes (finding, killing) are process_agents.py."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from gateway.app import create_app
from gateway.context import GatewayContext
from gateway.runtimes import procfs
from gateway.runtimes.base import ResourceLimits, Runtime, SandboxSpec
from gateway.runtimes.docker_labels import CONVERSATION_ID, install_filter
from gateway.server import uvicorn_options
from gateway.settings import Settings
from tests.helpers import eventually

#: Generous: a noisy 2-core machine starts agents slowly.
TIMEOUT = 60.0

USER_KEYS = {"alice": "key-alice", "bob": "key-bob"}
ADMIN_KEY = "key-admin"


def keyed(**overrides: Any) -> dict[str, Any]:
    """Settings overrides that turn on API keys (alice, bob, one admin)."""
    return {
        "api_keys": ",".join(f"{name}:{key}" for name, key in USER_KEYS.items()),
        "admin_keys": ADMIN_KEY,
        **overrides,
    }


def ws_url(base_url: str, path: str) -> str:
    return "ws" + base_url.removeprefix("http") + path


async def ws_connect(base_url: str, path: str, key: str | None = None, **kwargs: Any) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return await websockets.connect(
        ws_url(base_url, path), additional_headers=headers, max_size=None, open_timeout=TIMEOUT, **kwargs
    )


async def recv_json(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), within)
    data = json.loads(frame)
    assert isinstance(data, dict)
    return data


async def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], within: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Frames received up to and including the first that satisfies ``predicate``."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while True:
        frames.append(await recv_json(ws, max(0.1, deadline - time.monotonic())))
        if predicate(frames[-1]):
            return frames


async def close_code(ws: ClientConnection, within: float = TIMEOUT) -> int | None:
    """Reads until the server closes; the close code it sent."""
    try:
        async with asyncio.timeout(within):
            async for _ in ws:
                pass
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


async def create_ready(client: httpx.AsyncClient, key: str | None = None, **body: Any) -> str:
    """Creates a conversation and waits until it is READY; returns its id."""
    response = await client.post("/conversation", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    conversation_id = str(response.json()["id"])

    async def ready() -> bool:
        info = (await client.get(f"/conversation/{conversation_id}", headers=auth(key))).json()
        assert info["status"] in ("STARTING", "READY"), info
        return bool(info["status"] == "READY")

    await eventually(ready)
    return conversation_id


def is_status(status: str) -> Callable[[dict[str, Any]], bool]:
    def check(frame: dict[str, Any]) -> bool:
        detail = frame.get("detail", {})
        return bool(detail.get("type") == "ConversationStatusUpdate" and detail.get("status") == status)

    return check


def task_finished(task_id: str) -> Callable[[dict[str, Any]], bool]:
    def check(frame: dict[str, Any]) -> bool:
        detail = frame.get("detail", {})
        return bool(
            detail.get("type") == "TaskStatusUpdate"
            and detail.get("task_id") == task_id
            and detail.get("status") in ("COMPLETED", "CANCELLED", "ERROR")
        )

    return check


Serve = Callable[..., AbstractAsyncContextManager[str]]


@dataclass
class Harness:
    settings: Settings
    runtime: Runtime
    run_uvicorn: Serve
    app: Any = None
    #: The swarm harness's cluster (tests/gateway/swarm_cluster.Cluster); None elsewhere.
    cluster: Any = None

    @asynccontextmanager
    async def serve(self, **overrides: Any) -> AsyncIterator[str]:
        """A gateway on this runtime; ``overrides`` change its settings. Yields the base URL."""
        settings = self.settings.model_copy(update=overrides)
        self.app = create_app(settings, self.runtime)
        async with self.run_uvicorn(self.app, **uvicorn_options(settings)) as url:
            yield url

    @property
    def kind(self) -> str:
        """The runtime's name: ``memory``, ``process``, ``docker`` or ``swarm``."""
        return self.runtime.name

    @property
    def gateway(self) -> GatewayContext:
        """The parts of the gateway served last (inspected by white-box assertions)."""
        return context_of_app(self.app)

    @asynccontextmanager
    async def client(self, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        """A gateway and an HTTP client bound to it (``client.base_url``)."""
        async with self.serve(**overrides) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            yield client


def make_spec(**overrides: Any) -> SandboxSpec:
    """A spec as the gateway would make one (``overrides`` change its fields), for runtime tests."""
    fields: dict[str, Any] = {
        "conversation_id": uuid.uuid4(),
        "owner": "alice",
        "title": "a test conversation",
        "token": secrets.token_urlsafe(24),
        "created_at": datetime.now(UTC).replace(microsecond=0),
        "limits": ResourceLimits(),
    }
    fields.update(overrides)
    return SandboxSpec(**fields)


def base_settings(state_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "install": f"test-{uuid.uuid4().hex[:8]}",
        "runtime": "process",
        "start_timeout": 60.0,
        "process_stop_grace": 3.0,
        "docker_stop_grace": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def context_of_app(app: Any) -> GatewayContext:
    context = app.state.gateway
    assert isinstance(context, GatewayContext)
    return context


def exists(path: Path) -> bool:
    """``path.exists()`` (tiny and local: fine to call from a test coroutine)."""
    return path.exists()


def read_text(path: Path) -> str:
    return path.read_text()


async def agent_of(harness: Harness, conversation_id: str) -> procfs.ProcessId | None:
    """The agent process of a live conversation on the process runtime (from its
    ``meta.json``); ``None`` on Docker, where the container is the whole of it."""
    if harness.kind != "process":
        return None
    meta = json.loads(
        read_text(harness.settings.state_dir / harness.settings.install / conversation_id / "meta.json")
    )
    return procfs.ProcessId(meta["pid"], meta["started"])


async def leftovers(
    harness: Harness, conversation_id: str, agent: procfs.ProcessId | None = None
) -> list[str]:
    """What the runtime still holds of a conversation, in words; ``[]`` when nothing.
    Process: its folder, ``agent`` (see :func:`agent_of`) and its descendants while alive.
    Memory: its folder and its entry in the runtime's registry.
    Docker: every container, volume and network labelled with its id.
    Swarm: every service, task still running, config and network labelled with its id
    (containers and volumes on the nodes go with the tasks: tests/gateway/swarm checks them)."""
    if harness.kind == "swarm":
        from gateway.runtimes.swarm import SwarmRuntime

        assert isinstance(harness.runtime, SwarmRuntime)
        swarm = harness.runtime.engine
        filters = install_filter(harness.settings.install, **{CONVERSATION_ID: conversation_id})
        found = [f"service {s['Spec']['Name']}" for s in await swarm.services(filters)]
        found += [f"task {t['ID']}" for t in await swarm.tasks(filters) if t["Status"]["State"] == "running"]
        found += [f"config {c['Spec']['Name']}" for c in await swarm.configs(filters)]
        return found + [f"network {n['Name']}" for n in await swarm.networks(filters)]
    if harness.kind == "docker":
        return await _docker_leftovers(harness, conversation_id)
    if harness.kind == "memory":
        from gateway.runtimes.memory import MemoryRuntime

        assert isinstance(harness.runtime, MemoryRuntime)
        memory_folder = harness.runtime.folder(uuid.UUID(conversation_id))
        entry = await harness.runtime.find(uuid.UUID(conversation_id))
        found = [f"folder {memory_folder}"] if exists(memory_folder) else []
        return found + ([f"sandbox {entry}"] if entry is not None else [])
    folder = harness.settings.state_dir / harness.settings.install / conversation_id
    found = [f"folder {folder}"] if exists(folder) else []
    if agent is not None and procfs.is_alive(agent):  # a dead one's pid may be another's now
        found += [f"agent {agent.pid}"] + [f"process {child.pid}" for child in procfs.descendants(agent.pid)]
    return found


@asynccontextmanager
async def restarted_after_an_event(
    harness: Harness, title: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A READY conversation titled ``title`` gets a client event of type ``before``; then its
    gateway stops and another starts on the same runtime. Yields a client of the new gateway
    and the conversation's id."""
    async with harness.client() as client:
        cid = await create_ready(client, title=title)
        posted = await client.post(f"/conversation/{cid}/event", json={"detail": {"type": "before"}})
        assert posted.status_code == 201
    async with harness.client() as again:
        yield again, cid


async def _docker_leftovers(harness: Harness, conversation_id: str) -> list[str]:
    """Docker's part of :func:`leftovers`. A DELETE answers once the sandbox is stopped and
    the rest goes in the background (gateway/runtimes/docker_removal.py), so this waits for
    the harness runtime's removals under way before saying what is left."""
    from gateway.runtimes.docker import DockerRuntime

    assert isinstance(harness.runtime, DockerRuntime)
    await harness.runtime.removals_done()
    engine = harness.runtime.engine
    filters = install_filter(harness.settings.install, **{CONVERSATION_ID: conversation_id})
    containers = [f"container {c['Names'][0]}" for c in await engine.containers(filters)]
    volumes = [f"volume {v['Name']}" for v in await engine.volumes(filters)]
    networks = [f"network {n['Name']}" for n in await engine.networks(filters)]
    return containers + volumes + networks
