"""What the Docker runtime needs of an engine, and how it reads the engine's answers.

:class:`Engine` is the small typed protocol :mod:`gateway.runtimes.docker`
implements over aiodocker (whose errors it maps to
:class:`~gateway.errors.EngineError` / :class:`~gateway.errors.EngineNotFound`;
a fake in ``tests/gateway/runtimes/fake_engine.py`` implements it in memory); the
functions read container, volume and network summaries as the engine lists them. No aiodocker here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from uuid import UUID

from gateway.errors import EngineError, EngineNotFound, RuntimeFailure, RuntimeUnavailable
from gateway.runtimes import docker_config as cfg

__all__ = ["Engine", "EngineError", "EngineNotFound", "ImageCalls", "RuntimeUnavailable"]


class ImageCalls(Protocol):
    """The engine's image calls, for templates (:mod:`gateway.runtimes.docker_templates`); they
    raise as :class:`Engine`'s do."""

    async def image(self, name: str) -> dict[str, Any] | None: ...
    async def images(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    def build_image(
        self, context: bytes, tag: str, labels: dict[str, str], dockerfile: str
    ) -> AsyncIterator[dict[str, Any]]: ...
    async def pull_image(self, reference: str) -> None: ...
    async def remove_image(self, name: str) -> bool: ...


class Engine(ImageCalls, Protocol):
    """The engine calls the runtime makes; implemented over aiodocker in :mod:`gateway.runtimes.docker`.
    Every method raises only :class:`EngineError` (:class:`EngineNotFound` for a 404) or
    :class:`RuntimeUnavailable`."""

    async def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    async def inspect(self, name: str) -> dict[str, Any] | None: ...
    async def create_container(self, name: str, config: dict[str, Any]) -> str: ...
    async def put_archive(self, name: str, path: str, archive: bytes) -> None: ...
    async def read_file(self, name: str, path: str) -> bytes | None: ...
    async def start(self, name: str) -> None: ...
    async def stop(self, name: str, grace: float) -> None: ...
    async def remove_container(self, name: str) -> bool: ...
    async def logs(self, name: str, tail: int) -> str: ...
    async def volumes(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]: ...
    async def create_volume(self, name: str, labels: dict[str, str]) -> None: ...
    async def remove_volume(self, name: str) -> bool: ...
    async def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict[str, Any]]: ...
    async def create_network(self, config: dict[str, Any]) -> None: ...
    async def connect_network(self, network: str, container: str, ip: str) -> None: ...
    async def remove_network(self, name: str) -> bool: ...
    async def close(self) -> None: ...
    # --- usage (issue 14) ---
    async def stats(self, name: str) -> dict[str, Any]: ...
    # --- lifecycle: the freezer and helper containers (gateway.runtimes.docker_lifecycle) ---
    async def pause(self, name: str) -> None: ...
    async def unpause(self, name: str) -> None: ...
    async def wait(self, name: str) -> int: ...


def conversation_of(labels: dict[str, str] | None) -> UUID | None:
    try:
        return UUID((labels or {})[cfg.CONVERSATION_ID])
    except (KeyError, ValueError):
        return None


def by_conversation(summaries: list[dict[str, Any]]) -> dict[UUID, dict[str, dict[str, Any]]]:
    groups: dict[UUID, dict[str, dict[str, Any]]] = {}
    for summary in summaries:
        conversation = conversation_of(summary.get("Labels"))
        role = (summary.get("Labels") or {}).get(cfg.ROLE)
        if conversation is not None and role in (cfg.SANDBOX, cfg.RELAY):
            groups.setdefault(conversation, {})[role] = summary
    return groups


def summary_url(relay: dict[str, Any] | None) -> str | None:
    for port in (relay or {}).get("Ports") or []:
        if port.get("PrivatePort") == cfg.AGENT_PORT and port.get("PublicPort"):
            return f"http://127.0.0.1:{port['PublicPort']}"
    return None


def young(created: int | str | None, seconds: float) -> bool:
    """Created less than ``seconds`` ago (unix time, or the engine's RFC 3339 with nanoseconds)."""
    if created is None:
        return False
    if isinstance(created, int | float):
        stamp = float(created)
    else:
        text = re.sub(r"(\.\d{6})\d+", r"\1", created).replace("Z", "+00:00")
        try:
            stamp = datetime.fromisoformat(text).timestamp()
        except ValueError:
            return False
    return datetime.now(UTC).timestamp() - stamp < seconds


_T = TypeVar("_T")


async def quietly(call: Awaitable[_T]) -> _T | None:
    """``call``'s result, or ``None`` when it fails with a :class:`RuntimeFailure` (best-effort
    engine calls: clean-ups the next round retries, a log tail for a reason)."""
    try:
        return await call
    except RuntimeFailure:
        return None


async def whole(call: Awaitable[_T]) -> _T:
    """``call``'s result; a cancellation meanwhile waits for ``call`` to end (it is not
    cancelled: what it asked the engine for is made anyway), then is raised."""
    work = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # Its own failure is for the caller's clean-up to undo; a second cancel stops the wait only.
        with contextlib.suppress(BaseException):
            await asyncio.wait({work})
        raise


async def together(*calls: Awaitable[None]) -> None:
    """Run ``calls`` concurrently, each to its end even when another fails (so a clean-up
    after the failure finds everything they made); the first failure is raised after."""
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome
