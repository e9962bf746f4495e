"""The blocking client: :class:`ConvoyClient`, a thin layer over :class:`AsyncConvoyClient`.

Each ``ConvoyClient`` runs the async client on a private event loop in a background thread;
methods block until done, iterators yield as items arrive. Same names, same errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import UUID

from gateway.client_async import DEFAULT_TIMEOUT, AsyncConvoyClient
from gateway.client_conversation import AsyncConversationHandle
from gateway.client_files import Files
from gateway.client_loop import BackgroundLoop
from gateway.client_multipart import Progress
from gateway.client_tasks import AsyncTaskRun, TaskResult
from gateway.models import Conversation, ConversationLimits, ConversationStatus
from sandbox_agent.protocol import AgentInfo, Event, FileInfo, Runnable, Task, TaskOutput, TaskStatus


class TaskRun:
    """A started task (blocking view of :class:`AsyncTaskRun`)."""

    def __init__(self, loop: BackgroundLoop, run: AsyncTaskRun) -> None:
        self._loop = loop
        self.aio = run

    @property
    def id(self) -> UUID:
        return self.aio.id

    @property
    def task(self) -> Task:
        return self.aio.task

    @property
    def done(self) -> bool:
        return self.aio.done

    def events(self) -> Iterator[Event]:
        return self._loop.iterate(self.aio.events())

    def output(self) -> Iterator[TaskOutput]:
        return self._loop.iterate(self.aio.output())

    def wait(self) -> TaskResult:
        return self._loop.call(self.aio.wait())

    def refresh(self) -> Task:
        return self._loop.call(self.aio.refresh())

    def cancel(self) -> Task:
        return self._loop.call(self.aio.cancel())


class SyncFiles:
    """Blocking view of :class:`gateway.client_files.Files`."""

    def __init__(self, loop: BackgroundLoop, files: Files) -> None:
        self._loop = loop
        self.aio = files

    def info(self, path: str) -> FileInfo:
        return self._loop.call(self.aio.info(path))

    def mkdir(self, path: str) -> FileInfo:
        return self._loop.call(self.aio.mkdir(path))

    def touch(self, path: str) -> FileInfo:
        return self._loop.call(self.aio.touch(path))

    def delete(self, path: str) -> None:
        self._loop.call(self.aio.delete(path))

    def search(
        self, pattern: str | None = None, *, q: str | None = None, path: str | None = None
    ) -> Iterator[FileInfo]:
        return self._loop.iterate(self.aio.search(pattern, q=q, path=path))

    def count(self, pattern: str | None = None, *, q: str | None = None, path: str | None = None) -> int:
        return self._loop.call(self.aio.count(pattern, q=q, path=path))

    def upload(
        self,
        sources: Sequence[str | os.PathLike[str]],
        dest: str = "",
        *,
        overwrite: bool = True,
        progress: Progress | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> list[FileInfo]:
        return self._loop.call(
            self.aio.upload(sources, dest, overwrite=overwrite, progress=progress, on_total=on_total)
        )

    def download(
        self,
        src: str,
        dest: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> list[Path]:
        return self._loop.call(self.aio.download(src, dest, progress=progress, on_total=on_total))

    def stream(self, path: str) -> Iterator[bytes]:
        return self._loop.iterate(self.aio.stream(path))

    def read_bytes(self, path: str) -> bytes:
        return self._loop.call(self.aio.read_bytes(path))


class ConversationHandle:
    """A live conversation (blocking view of :class:`AsyncConversationHandle`); ``with`` deletes it
    on exit."""

    def __init__(self, loop: BackgroundLoop, handle: AsyncConversationHandle) -> None:
        self._loop = loop
        self.aio = handle
        self.files = SyncFiles(loop, handle.files)

    @property
    def id(self) -> UUID:
        return self.aio.id

    @property
    def info(self) -> Conversation:
        return self.aio.info

    @property
    def status(self) -> ConversationStatus:
        return self.aio.status

    def __repr__(self) -> str:
        return repr(self.aio)

    def __enter__(self) -> ConversationHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.delete(missing_ok=True)

    def refresh(self) -> Conversation:
        return self._loop.call(self.aio.refresh())

    def wait_ready(
        self, timeout: float = 120.0, on_status: Callable[[Conversation], None] | None = None
    ) -> Conversation:
        return self._loop.call(self.aio.wait_ready(timeout, on_status))

    def delete(self, *, missing_ok: bool = False) -> None:
        self._loop.call(self.aio.delete(missing_ok=missing_ok))

    def agent_info(self) -> AgentInfo:
        return self._loop.call(self.aio.agent_info())

    def upload(
        self, *sources: str | os.PathLike[str], dest: str = "", overwrite: bool = True
    ) -> list[FileInfo]:
        return self._loop.call(self.aio.upload(*sources, dest=dest, overwrite=overwrite))

    def download(self, src: str, dest: str | os.PathLike[str]) -> list[Path]:
        return self._loop.call(self.aio.download(src, dest))

    def start(self, runnable: Runnable, title: str = "") -> TaskRun:
        return TaskRun(self._loop, self._loop.call(self.aio.start(runnable, title)))

    def start_shell(
        self,
        command: str | Sequence[str],
        *,
        cwd: str = ".",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        title: str = "",
    ) -> TaskRun:
        run = self.aio.start_shell(command, cwd=cwd, env=env, timeout=timeout, title=title)
        return TaskRun(self._loop, self._loop.call(run))

    def run(
        self,
        command: str | Sequence[str],
        *,
        cwd: str = ".",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        title: str = "",
        check: bool = False,
    ) -> TaskResult:
        return self._loop.call(
            self.aio.run(command, cwd=cwd, env=env, timeout=timeout, title=title, check=check)
        )

    def run_python(
        self,
        code: str,
        *,
        cwd: str = ".",
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        title: str = "",
        check: bool = False,
    ) -> TaskResult:
        return self._loop.call(
            self.aio.run_python(code, cwd=cwd, env=env, timeout=timeout, title=title, check=check)
        )

    def tasks(self, status: Sequence[TaskStatus] | None = None) -> Iterator[Task]:
        return self._loop.iterate(self.aio.tasks(status))

    def task(self, task_id: UUID | str) -> Task:
        return self._loop.call(self.aio.task(task_id))

    def cancel(self, task_id: UUID | str) -> Task:
        return self._loop.call(self.aio.cancel(task_id))

    def events(
        self, *, after_seq: int | None = None, types: Sequence[str] | None = None, task_id: UUID | None = None
    ) -> Iterator[Event]:
        return self._loop.iterate(self.aio.events(after_seq=after_seq, types=types, task_id=task_id))

    def follow(self, after_seq: int = 0, *, reconnect_for: float = 60.0) -> Iterator[Event]:
        return self._loop.iterate(self.aio.follow(after_seq, reconnect_for=reconnect_for))

    def event(self, event_id: UUID | str) -> Event:
        return self._loop.call(self.aio.event(event_id))

    def trigger(self, detail: Mapping[str, Any]) -> Event:
        return self._loop.call(self.aio.trigger(detail))


class ConvoyClient:
    """The blocking client. Use as ``with`` (or call :meth:`close`)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._loop = BackgroundLoop()
        self.aio = self._loop.call(_make(base_url, api_key, timeout))

    def __enter__(self) -> ConvoyClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._loop.call(self.aio.aclose())
        finally:
            self._loop.close()

    def create(
        self,
        *,
        title: str = "",
        env: Mapping[str, str] | None = None,
        limits: ConversationLimits | None = None,
        idle_timeout: float | None = None,
        internet: bool = False,
        wait: bool = True,
        ready_timeout: float = 120.0,
        on_status: Callable[[Conversation], None] | None = None,
    ) -> ConversationHandle:
        """Begin a conversation (READY on return unless ``wait=False``); see ``AsyncConvoyClient.create``."""
        handle = self.aio.create(
            title=title,
            env=env,
            limits=limits,
            idle_timeout=idle_timeout,
            internet=internet,
            wait=wait,
            ready_timeout=ready_timeout,
            on_status=on_status,
        )
        return ConversationHandle(self._loop, self._loop.call(handle))

    def open(self, conversation_id: UUID | str) -> ConversationHandle:
        return ConversationHandle(self._loop, self._loop.call(self.aio.open(conversation_id)))

    def get(self, conversation_id: UUID | str) -> Conversation:
        return self._loop.call(self.aio.get(conversation_id))

    def list(self, *, page_size: int = 100) -> Iterator[Conversation]:
        return self._loop.iterate(self.aio.list(page_size=page_size))

    def count(self) -> int:
        return self._loop.call(self.aio.count())

    def delete(self, conversation_id: UUID | str, *, missing_ok: bool = False) -> None:
        self._loop.call(self.aio.delete(conversation_id, missing_ok=missing_ok))


async def _make(base_url: str, api_key: str | None, timeout: float) -> AsyncConvoyClient:  # noqa: ASYNC109
    # Built on the loop's thread so everything it creates belongs to that loop.
    return AsyncConvoyClient(base_url, api_key, timeout)
