"""The asyncio client: :class:`AsyncConvoyClient`, one gateway and one API key."""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from uuid import UUID

import httpx

from gateway.client import _templates
from gateway.client._conversation import AsyncConversationHandle, delete_conversation
from gateway.client._exceptions import NotFound
from gateway.client._transport import Connection, parse_json, parse_model
from gateway.models import (
    Conversation,
    ConversationCreate,
    ConversationLimits,
    Count,
    EgressPolicy,
    OnIdle,
    Snapshot,
    TemplateInfo,
)

DEFAULT_TIMEOUT = 60.0


class AsyncConvoyClient:
    """One gateway, one API key. Use as ``async with`` (or call :meth:`aclose`).

    ``timeout`` bounds each request, in seconds. ``transport`` replaces httpx's network transport
    for the HTTP routes (as ``httpx.AsyncClient(transport=...)`` does): an ``httpx.MockTransport``
    for tests, an ``httpx.ASGITransport(app)`` to drive an app in-process. WebSockets (``follow``,
    task output) always dial ``base_url``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._conn = Connection(base_url, api_key, timeout, transport)

    @property
    def base_url(self) -> str:
        return self._conn.base_url

    async def __aenter__(self) -> AsyncConvoyClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._conn.aclose()

    async def create(
        self,
        *,
        title: str = "",
        env: Mapping[str, str] | None = None,
        limits: ConversationLimits | None = None,
        idle_timeout: float | None = None,
        internet: bool = False,
        egress: Sequence[str] | None = None,
        on_idle: OnIdle | None = None,
        snapshot: UUID | str | None = None,
        wait: bool = True,
        ready_timeout: float = 120.0,
        on_status: Callable[[Conversation], None] | None = None,
        template: str | None = None,
    ) -> AsyncConversationHandle:
        """Begin a conversation. With ``wait`` (the default) return once it is READY, raising
        :class:`SandboxFailed` with the reason if it fails to start (the failed conversation is
        deleted). ``on_status`` sees each state while waiting. ``egress``: the hosts the sandbox
        may reach instead of no network (domains, ``*.`` wildcards, CIDRs; Docker runtime).
        ``on_idle``: "pause" keeps an idle conversation paused instead of deleting it;
        ``snapshot``: start with the workspace of this snapshot (one of yours).
        ``template``: the template it runs (:meth:`templates`; unset: the gateway's default)."""
        body = ConversationCreate(
            title=title,
            env=dict(env or {}),
            limits=limits or ConversationLimits(),
            idle_timeout=idle_timeout,
            internet=internet,
            egress=None if egress is None else EgressPolicy(allow=list(egress)),
            on_idle=on_idle,
            snapshot=None if snapshot is None else _uuid(snapshot, "snapshot"),
            template=template,
        )
        response = await self._conn.request("POST", "/conversation", json_body=body.model_dump(mode="json"))
        handle = AsyncConversationHandle(self._conn, parse_model(Conversation, parse_json(response)))
        if wait:
            try:
                await handle.wait_ready(ready_timeout, on_status)
            except BaseException:
                await handle.delete(missing_ok=True)
                raise
        return handle

    def conversation(self, info: Conversation) -> AsyncConversationHandle:
        """A handle for a conversation already fetched (no request)."""
        return AsyncConversationHandle(self._conn, info)

    async def open(self, conversation_id: UUID | str) -> AsyncConversationHandle:
        """A handle for an existing conversation (fetches it: :class:`NotFound` if unknown or not yours)."""
        return AsyncConversationHandle(self._conn, await self.get(conversation_id))

    async def get(self, conversation_id: UUID | str) -> Conversation:
        return await self._conn.get_model(f"/conversation/{_uuid(conversation_id)}", Conversation)

    def list(self, *, page_size: int = 100) -> AsyncGenerator[Conversation, None]:
        """Every conversation (admin only), all pages."""
        return self._conn.pages("/conversation", Conversation, {"limit": page_size})

    async def count(self) -> int:
        """How many conversations there are (admin only)."""
        return (await self._conn.get_model("/conversation-count", Count)).count

    async def delete(self, conversation_id: UUID | str, *, missing_ok: bool = False) -> None:
        """Finish a conversation: tasks stopped, sandbox and files removed."""
        await delete_conversation(self._conn, _uuid(conversation_id), missing_ok=missing_ok)

    # --- templates ----------------------------------------------------------------------

    async def templates(self) -> builtins.list[TemplateInfo]:
        """Every template a conversation may run, the default first."""
        return [template async for template in _templates.list_templates(self._conn)]

    async def build_template(
        self,
        name: str,
        *,
        from_image: str | None = None,
        dockerfile: str | Path | None = None,
        context: str | Path | None = None,
        description: str = "",
        on_progress: Callable[[str], None] | None = None,
    ) -> TemplateInfo:
        """Build (or rebuild) the template ``name`` (admin) from a local image (``from_image``) or
        from a ``dockerfile`` and its ``context`` folder (default: the Dockerfile's), which is sent
        as a tar. ``on_progress`` sees each line of the build's output. A failed build raises
        :class:`BadRequest` (422) saying why."""
        return await _templates.build_template(
            self._conn,
            name,
            from_image=from_image,
            dockerfile=dockerfile,
            context=context,
            description=description,
            on_progress=on_progress,
        )

    async def remove_template(self, name: str) -> None:
        """Remove a template (admin); :class:`Conflict` while conversations run it."""
        await _templates.remove_template(self._conn, name)

    # --- snapshots --------------------------------------------------------------------

    def snapshots(self, *, page_size: int = 100) -> AsyncGenerator[Snapshot, None]:
        """Your snapshots (an admin's: everyone's), oldest first, all pages."""
        return self._conn.pages("/snapshot", Snapshot, {"limit": page_size})

    async def snapshot(self, snapshot_id: UUID | str) -> Snapshot:
        return await self._conn.get_model(f"/snapshot/{_uuid(snapshot_id, 'snapshot')}", Snapshot)

    async def delete_snapshot(self, snapshot_id: UUID | str, *, missing_ok: bool = False) -> None:
        try:
            await self._conn.request("DELETE", f"/snapshot/{_uuid(snapshot_id, 'snapshot')}")
        except NotFound:
            if not missing_ok:
                raise


def _uuid(value: UUID | str, kind: str = "conversation") -> UUID:
    """An id; a malformed one is a :class:`NotFound`, exactly like an unknown one."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"no {kind} {value!r} (not a {kind} id)", status_code=404) from None
