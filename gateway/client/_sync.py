"""The blocking client: :class:`ConvoyClient`, a thin layer over :class:`AsyncConvoyClient`.

Each ``ConvoyClient`` runs the async client on a private event loop in a background thread;
methods block until done, iterators yield as items arrive. Same names, same errors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar
from uuid import UUID

import httpx

from gateway.client._async import DEFAULT_TIMEOUT, AsyncConvoyClient
from gateway.client._conversation import AsyncConversationHandle
from gateway.client._files import AsyncFiles
from gateway.client._loop import BackgroundLoop
from gateway.client._tasks import AsyncTaskRun
from gateway.client._terminals import AsyncTerminal
from gateway.models import Conversation, ConversationStatus
from sandbox_agent.protocol import Task, TerminalExit
from sandbox_agent.protocol import Terminal as TerminalInfo

A = TypeVar("A")
P = ParamSpec("P")
T = TypeVar("T")
V = TypeVar("V")


class _Blocking(Generic[A]):
    """A blocking view of the async object ``aio``, whose coroutines run on ``loop``."""

    def __init__(self, loop: BackgroundLoop, aio: A) -> None:
        self._loop = loop
        self.aio = aio


def _blocking(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[_Blocking[A], P], T]:
    """The async ``method`` as a blocking one: same parameters, same result, same errors."""

    def call(self: _Blocking[A], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.call(method(self.aio, *args, **kwargs))

    _like(call, method, same_result=True)
    return call


def _iterating(
    method: Callable[Concatenate[A, P], AsyncIterator[T]],
) -> Callable[Concatenate[_Blocking[A], P], Iterator[T]]:
    """The async iterator ``method`` as a plain iterator that yields as items arrive."""

    def call(self: _Blocking[A], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._loop.iterate(method(self.aio, *args, **kwargs))

    _like(call, method)
    return call


def _viewing(
    method: Callable[Concatenate[A, P], Coroutine[Any, Any, T]],
    view: Callable[[BackgroundLoop, T], V],
) -> Callable[Concatenate[_Blocking[A], P], V]:
    """Like :func:`_blocking`, with the async result wrapped in its blocking ``view``."""

    def call(self: _Blocking[A], /, *args: P.args, **kwargs: P.kwargs) -> V:
        return view(self._loop, self._loop.call(method(self.aio, *args, **kwargs)))

    _like(call, method)
    return call


def _like(call: Callable[..., object], method: Callable[..., object], same_result: bool = False) -> None:
    """Give ``call`` the name, docstring and parameters (for help()) of the async ``method``."""
    functools.update_wrapper(call, method, assigned=("__name__", "__doc__"), updated=())
    if not same_result:  # else help() would show the async result type
        signature = inspect.signature(method).replace(return_annotation=inspect.Signature.empty)
        call.__signature__ = signature  # type: ignore[attr-defined]


class TaskRun(_Blocking[AsyncTaskRun]):
    """A started task (blocking view of :class:`AsyncTaskRun`)."""

    @property
    def id(self) -> UUID:
        return self.aio.id

    @property
    def task(self) -> Task:
        return self.aio.task

    @property
    def done(self) -> bool:
        return self.aio.done

    events = _iterating(AsyncTaskRun.events)
    output = _iterating(AsyncTaskRun.output)
    wait = _blocking(AsyncTaskRun.wait)
    refresh = _blocking(AsyncTaskRun.refresh)
    cancel = _blocking(AsyncTaskRun.cancel)
    write_stdin = _blocking(AsyncTaskRun.write_stdin)
    close = _blocking(AsyncTaskRun.close)


class Terminal(_Blocking[AsyncTerminal]):
    """A terminal and one viewer connection to it (blocking view of :class:`AsyncTerminal`);
    ``with`` closes the connection, not the terminal."""

    @property
    def id(self) -> UUID:
        return self.aio.id

    @property
    def info(self) -> TerminalInfo:
        return self.aio.info

    @property
    def offset(self) -> int:
        return self.aio.offset

    @property
    def exit(self) -> TerminalExit | None:
        return self.aio.exit

    @property
    def exit_code(self) -> int | None:
        return self.aio.exit_code

    def __enter__(self) -> Terminal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def connect(self, offset: int | None = None) -> Terminal:
        """Open a viewer connection (see :meth:`AsyncTerminal.connect`)."""
        self._loop.call(self.aio.connect(offset))
        return self

    send = _blocking(AsyncTerminal.send)
    recv = _blocking(AsyncTerminal.recv)
    resize = _blocking(AsyncTerminal.resize)
    close = _blocking(AsyncTerminal.close)
    refresh = _blocking(AsyncTerminal.refresh)
    delete = _blocking(AsyncTerminal.delete)


class Files(_Blocking[AsyncFiles]):
    """The file routes of one conversation (blocking view of :class:`AsyncFiles`)."""

    info = _blocking(AsyncFiles.info)
    mkdir = _blocking(AsyncFiles.mkdir)
    touch = _blocking(AsyncFiles.touch)
    delete = _blocking(AsyncFiles.delete)
    search = _iterating(AsyncFiles.search)
    count = _blocking(AsyncFiles.count)
    upload = _blocking(AsyncFiles.upload)
    download = _blocking(AsyncFiles.download)
    stream = _iterating(AsyncFiles.stream)
    read_bytes = _blocking(AsyncFiles.read_bytes)


class ConversationHandle(_Blocking[AsyncConversationHandle]):
    """A live conversation (blocking view of :class:`AsyncConversationHandle`); ``with`` deletes it
    on exit."""

    def __init__(self, loop: BackgroundLoop, handle: AsyncConversationHandle) -> None:
        super().__init__(loop, handle)
        self.files = Files(loop, handle.files)

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

    refresh = _blocking(AsyncConversationHandle.refresh)
    wait_ready = _blocking(AsyncConversationHandle.wait_ready)
    delete = _blocking(AsyncConversationHandle.delete)
    agent_info = _blocking(AsyncConversationHandle.agent_info)
    pause = _blocking(AsyncConversationHandle.pause)
    resume = _blocking(AsyncConversationHandle.resume)
    fork = _viewing(AsyncConversationHandle.fork, lambda loop, fork: ConversationHandle(loop, fork))
    snapshot = _blocking(AsyncConversationHandle.snapshot)
    upload = _blocking(AsyncConversationHandle.upload)
    download = _blocking(AsyncConversationHandle.download)
    start = _viewing(AsyncConversationHandle.start, TaskRun)
    start_streaming = _viewing(AsyncConversationHandle.start_streaming, TaskRun)
    start_shell = _viewing(AsyncConversationHandle.start_shell, TaskRun)
    run = _blocking(AsyncConversationHandle.run)
    run_python = _blocking(AsyncConversationHandle.run_python)
    tasks = _iterating(AsyncConversationHandle.tasks)
    task = _blocking(AsyncConversationHandle.task)
    cancel = _blocking(AsyncConversationHandle.cancel)
    events = _iterating(AsyncConversationHandle.events)
    follow = _iterating(AsyncConversationHandle.follow)
    event = _blocking(AsyncConversationHandle.event)
    trigger = _blocking(AsyncConversationHandle.trigger)
    port_link = _blocking(AsyncConversationHandle.port_link)
    write_stdin = _blocking(AsyncConversationHandle.write_stdin)
    open_terminal = _viewing(AsyncConversationHandle.open_terminal, Terminal)
    terminal = _viewing(AsyncConversationHandle.terminal, Terminal)
    terminals = _iterating(AsyncConversationHandle.terminals)


class ConvoyClient(_Blocking[AsyncConvoyClient]):
    """The blocking client. Use as ``with`` (or call :meth:`close`). The parameters are
    :class:`AsyncConvoyClient`'s; a ``transport`` must be an async one (``httpx.MockTransport``
    serves both kinds)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        loop = BackgroundLoop()
        try:
            aio = loop.call(_make(base_url, api_key, timeout, transport))
        except BaseException:
            loop.close()
            raise
        super().__init__(loop, aio)

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

    create = _viewing(AsyncConvoyClient.create, ConversationHandle)
    open = _viewing(AsyncConvoyClient.open, ConversationHandle)
    get = _blocking(AsyncConvoyClient.get)
    count = _blocking(AsyncConvoyClient.count)
    delete = _blocking(AsyncConvoyClient.delete)
    list = _iterating(AsyncConvoyClient.list)
    snapshots = _iterating(AsyncConvoyClient.snapshots)
    snapshot = _blocking(AsyncConvoyClient.snapshot)
    delete_snapshot = _blocking(AsyncConvoyClient.delete_snapshot)
    templates = _blocking(AsyncConvoyClient.templates)
    #: ``on_progress`` is called on the client's own thread.
    build_template = _blocking(AsyncConvoyClient.build_template)
    remove_template = _blocking(AsyncConvoyClient.remove_template)


async def _make(
    base_url: str,
    api_key: str | None,
    timeout: float,  # noqa: ASYNC109 - the client's per-request timeout, not this call's
    transport: httpx.AsyncBaseTransport | None,
) -> AsyncConvoyClient:
    # Built on the loop's thread so everything it creates belongs to that loop.
    return AsyncConvoyClient(base_url, api_key, timeout, transport=transport)
