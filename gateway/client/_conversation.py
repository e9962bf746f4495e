"""One conversation, as the async client sees it: its status, tasks, events and files.

Used as an async context manager it deletes the conversation on exit (a conversation that
is already gone is fine).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

from gateway.client._events import follow_events, history
from gateway.client._exceptions import NotFound, SandboxFailed
from gateway.client._files import AsyncFiles
from gateway.client._readiness import wait_ready
from gateway.client._runnables import python, shell
from gateway.client._tasks import AsyncTaskRun, TaskResult, start_streamed_task, start_task
from gateway.client._terminals import AsyncTerminal, create_terminal, write_stdin
from gateway.client._transport import Connection, parse_json, parse_model
from gateway.models import (
    Conversation,
    ConversationStatus,
    ForkCreate,
    PortLink,
    Snapshot,
    SnapshotCreate,
)
from sandbox_agent.protocol import (
    AgentInfo,
    Event,
    FileInfo,
    Runnable,
    StdinWritten,
    Task,
    TaskStatus,
    Terminal,
)


class AsyncConversationHandle:
    """A live conversation. ``info`` is what the gateway last said about it."""

    def __init__(self, conn: Connection, info: Conversation) -> None:
        self._conn = conn
        self.info = info
        self.files = AsyncFiles(conn, info.id)

    @property
    def id(self) -> UUID:
        return self.info.id

    @property
    def status(self) -> ConversationStatus:
        return self.info.status

    def __repr__(self) -> str:
        return f"<conversation {self.id} {self.status.value}>"

    async def __aenter__(self) -> AsyncConversationHandle:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.delete(missing_ok=True)

    # --- lifecycle --------------------------------------------------------------------

    async def refresh(self) -> Conversation:
        """Fetch the conversation's current state into ``info``."""
        self.info = await self._conn.get_model(f"/conversation/{self.id}", Conversation)
        return self.info

    async def wait_ready(
        self,
        timeout: float = 120.0,  # noqa: ASYNC109 - also the blocking client's; checked against a deadline
        on_status: Callable[[Conversation], None] | None = None,
    ) -> Conversation:
        """Wait until the sandbox is READY (or PAUSED: any request resumes it). Raises
        :class:`SandboxFailed` with the reason on ERROR (or STOPPING), :class:`GatewayUnavailable`
        after ``timeout`` seconds. ``on_status`` sees every state seen (for progress displays).

        A STARTING conversation is followed over its WebSocket, so READY is seen when it
        happens; where no WebSocket can be opened (a replaced ``transport``), it is polled."""
        return await wait_ready(self._conn, self, timeout, on_status)

    async def delete(self, *, missing_ok: bool = False) -> None:
        """Finish the conversation: its tasks stop, its sandbox and files are removed."""
        await delete_conversation(self._conn, self.id, missing_ok=missing_ok)

    # --- pause, resume, fork, snapshot ---------------------------------------------------

    async def pause(self) -> Conversation:
        """Freeze the sandbox (PAUSED); any later request resumes it."""
        return await self._lifecycle("pause")

    async def resume(self) -> Conversation:
        """Thaw a PAUSED sandbox (READY)."""
        return await self._lifecycle("resume")

    async def _lifecycle(self, action: str) -> Conversation:
        response = await self._conn.request("POST", f"/conversation/{self.id}/{action}")
        self.info = parse_model(Conversation, parse_json(response))
        return self.info

    async def fork(self, title: str | None = None) -> AsyncConversationHandle:
        """A new conversation whose workspace is a copy of this one's (answered once it is
        READY; :class:`SandboxFailed` if it failed). Processes are not copied."""
        body = ForkCreate(title=title).model_dump(mode="json", exclude_none=True)
        response = await self._conn.request("POST", f"/conversation/{self.id}/fork", json_body=body)
        fork = AsyncConversationHandle(self._conn, parse_model(Conversation, parse_json(response)))
        if fork.status is ConversationStatus.ERROR:
            raise SandboxFailed(f"the fork {fork.id} failed: {fork.info.reason}", reason=fork.info.reason)
        return fork

    async def snapshot(self, name: str = "") -> Snapshot:
        """Save a copy of the workspace; it outlives the conversation."""
        body = SnapshotCreate(name=name).model_dump(mode="json")
        response = await self._conn.request("POST", f"/conversation/{self.id}/snapshot", json_body=body)
        return parse_model(Snapshot, parse_json(response))

    async def agent_info(self) -> AgentInfo:
        """What this sandbox can run, and its limits."""
        return await self._conn.get_model(f"/conversation/{self.id}/agent-info", AgentInfo)

    # --- files (shortcuts; everything else is on ``files``) ---------------------------

    async def upload(
        self, *sources: str | os.PathLike[str], dest: str = "", overwrite: bool = True
    ) -> list[FileInfo]:
        """Upload local files and directories (``cp -r`` style) into workspace directory ``dest``."""
        return await self.files.upload(sources, dest, overwrite=overwrite)

    async def download(self, src: str, dest: str | os.PathLike[str]) -> list[Path]:
        """Download a workspace file or directory to the local ``dest``; answers the files written."""
        return await self.files.download(src, dest)

    # --- tasks ------------------------------------------------------------------------

    async def start(self, runnable: Runnable, title: str = "") -> AsyncTaskRun:
        """Start any runnable (``Shell``, ``Python``, ``Ticker``); iterate or wait on the run."""
        return await start_task(self._conn, self.id, runnable, title)

    async def start_streaming(self, runnable: Runnable, title: str = "") -> AsyncTaskRun:
        """Like :meth:`start`, with the task's events and final state carried by the creating
        request's answer (one round trip for a whole command). Iterate or wait on the run; it
        holds that answer open until then (or until :meth:`AsyncTaskRun.close`). Leaving early
        does not cancel the task."""
        return await start_streamed_task(self._conn, self.id, runnable, title)

    async def start_shell(
        self,
        command: str | Sequence[str],
        *,
        cwd: str = ".",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the task's own limit, enforced in the sandbox
        title: str = "",
    ) -> AsyncTaskRun:
        """Start a shell command (a string for ``sh -c``, or an argv)."""
        return await self.start(shell(command, cwd=cwd, env=env, timeout=timeout), title)

    async def run(
        self,
        command: str | Sequence[str],
        *,
        cwd: str = ".",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the task's own limit, enforced in the sandbox
        title: str = "",
        check: bool = False,
    ) -> TaskResult:
        """Run a shell command to its end: exit code, stdout, stderr. ``check`` raises
        :class:`TaskFailed` unless it exits 0."""
        return await self._run_to_the_end(shell(command, cwd=cwd, env=env, timeout=timeout), title, check)

    async def run_python(
        self,
        code: str,
        *,
        cwd: str = ".",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the task's own limit, enforced in the sandbox
        title: str = "",
        check: bool = False,
    ) -> TaskResult:
        """Run Python source in the sandbox to its end (like :meth:`run`)."""
        return await self._run_to_the_end(python(code, cwd=cwd, env=env, timeout=timeout), title, check)

    async def _run_to_the_end(self, runnable: Runnable, title: str, check: bool) -> TaskResult:
        run = await self.start_streaming(runnable, title)
        try:
            result = await run.wait()
        finally:
            await run.close()
        return result.check() if check else result

    def tasks(self, status: Sequence[TaskStatus] | None = None) -> AsyncGenerator[Task, None]:
        """Every task of the conversation (all pages), optionally only those in ``status``."""
        params = {"status": [s.value for s in status] if status else None, "limit": 100}
        return self._conn.pages(f"/conversation/{self.id}/task", Task, params)

    async def task(self, task_id: UUID | str) -> Task:
        return await self._conn.get_model(f"/conversation/{self.id}/task/{task_id}", Task)

    async def cancel(self, task_id: UUID | str) -> Task:
        """Cancel a task (its whole process group); does not wait for it to end."""
        response = await self._conn.request("DELETE", f"/conversation/{self.id}/task/{task_id}")
        return parse_model(Task, parse_json(response)) if response.content else await self.task(task_id)

    async def write_stdin(self, task_id: UUID | str, data: bytes | str, *, eof: bool = False) -> StdinWritten:
        """Write to the stdin of a task started with ``stdin=True``; ``eof`` closes it afterwards.
        A task without open stdin (or finished) raises :class:`Conflict`."""
        return await write_stdin(self._conn, self.id, task_id, data, eof)

    # --- terminals --------------------------------------------------------------------

    async def open_terminal(
        self, *, cols: int = 80, rows: int = 24, command: str | Sequence[str] | None = None
    ) -> AsyncTerminal:
        """Start a terminal (default: the sandbox user's login shell); ``connect()`` it to use it."""
        argv = command if command is None or isinstance(command, str) else list(command)
        return await create_terminal(self._conn, self.id, cols, rows, argv)

    async def terminal(self, terminal_id: UUID | str) -> AsyncTerminal:
        """An existing terminal (not connected yet)."""
        info = await self._conn.get_model(f"/conversation/{self.id}/terminal/{terminal_id}", Terminal)
        return AsyncTerminal(self._conn, self.id, info)

    def terminals(self) -> AsyncGenerator[Terminal, None]:
        """Every terminal of the conversation, running or exited."""
        return self._conn.pages(f"/conversation/{self.id}/terminal", Terminal, {"limit": 100})

    # --- events -----------------------------------------------------------------------

    def events(
        self,
        *,
        after_seq: int | None = None,
        types: Sequence[str] | None = None,
        task_id: UUID | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Stored events in ``seq`` order, all pages, filtered like ``GET .../event``."""
        return history(self._conn, self.id, after_seq=after_seq, types=types, task_id=task_id)

    def follow(self, after_seq: int = 0, *, reconnect_for: float = 60.0) -> AsyncGenerator[Event, None]:
        """History after ``after_seq`` then live events, resuming by itself across dropped
        connections, each event once. Ends when the conversation ends."""
        return follow_events(self._conn, self.id, after_seq, reconnect_for=reconnect_for)

    async def event(self, event_id: UUID | str) -> Event:
        return await self._conn.get_model(f"/conversation/{self.id}/event/{event_id}", Event)

    async def trigger(self, detail: Mapping[str, Any]) -> Event:
        """Record a client event (``detail`` needs a non-reserved ``type``); answers the stored event."""
        response = await self._conn.request(
            "POST", f"/conversation/{self.id}/event", json_body={"detail": dict(detail)}
        )
        return parse_model(Event, parse_json(response))

    # --- preview ports ----------------------------------------------------------------

    async def port_link(self, port: int, *, expires_in: int = 3600) -> PortLink:
        """A signed URL that opens the server listening on ``port`` inside the sandbox, without
        a key (a browser tab, a colleague), until its ``expires_at``; ``expires_in`` seconds,
        at most the gateway's ``preview_link_max_ttl``. Deleting the conversation revokes it."""
        response = await self._conn.request(
            "POST", f"/conversation/{self.id}/port/{port}/link", json_body={"expires_in": expires_in}
        )
        return parse_model(PortLink, parse_json(response))


async def delete_conversation(conn: Connection, conversation_id: UUID, *, missing_ok: bool) -> None:
    """``DELETE /conversation/{id}``; with ``missing_ok`` one that is already gone is fine."""
    try:
        await conn.request("DELETE", f"/conversation/{conversation_id}")
    except NotFound:
        if not missing_ok:
            raise
