"""The convoy Python client: :class:`AsyncConvoyClient` (asyncio) and :class:`ConvoyClient` (blocking).

::

    from gateway.client import ConvoyClient

    with ConvoyClient("http://127.0.0.1:8000") as client, client.create(title="demo") as convo:
        convo.upload("hello.py")
        result = convo.run("python3 hello.py")
        print(result.exit_code, result.stdout, end="")

Each asyncio class has a blocking twin of the same name without ``Async``: ``AsyncConvoyClient`` /
``ConvoyClient``, ``AsyncConversationHandle`` / ``ConversationHandle``, ``AsyncTaskRun`` / ``TaskRun``,
``AsyncFiles`` / ``Files``, ``AsyncTerminal`` / ``Terminal`` (a PTY in the sandbox and a viewer of it).
Every failure is a :class:`ConvoyError`; the subclasses say which kind
(the tree is in ``gateway.client._exceptions``). ``transport=`` takes an ``httpx.AsyncBaseTransport``
(``httpx.MockTransport`` in tests). The pieces live in private ``gateway.client._*`` modules (http
transport, events, runnables, tasks, files, the sync wrapper); import them from here.

This package needs only the core dependencies (httpx, httptools, websockets, pydantic):
``pip install convoy``.
The gateway needs ``convoy[server]``, the command line ``convoy[cli]``.
"""

from __future__ import annotations

from gateway.client._async import AsyncConvoyClient
from gateway.client._conversation import AsyncConversationHandle
from gateway.client._exceptions import (
    BadRequest,
    Conflict,
    ConversationEnded,
    ConvoyError,
    Forbidden,
    GatewayUnavailable,
    InvalidURL,
    LimitReached,
    NotFound,
    SandboxFailed,
    TaskFailed,
    Unauthorized,
    UnexpectedResponse,
    WebSocketClosed,
)
from gateway.client._files import AsyncFiles
from gateway.client._runnables import python, shell
from gateway.client._sync import ConversationHandle, ConvoyClient, Files, TaskRun, Terminal
from gateway.client._tasks import AsyncTaskRun, TaskResult
from gateway.client._terminals import AsyncTerminal
from gateway.models import Conversation, ConversationLimits, ConversationStatus, Snapshot
from sandbox_agent.protocol import Event, FileInfo, Task, TaskOutput, TaskStatus

__all__ = [
    "AsyncConversationHandle",
    "AsyncConvoyClient",
    "AsyncFiles",
    "AsyncTaskRun",
    "AsyncTerminal",
    "BadRequest",
    "Conflict",
    "Conversation",
    "ConversationEnded",
    "ConversationHandle",
    "ConversationLimits",
    "ConversationStatus",
    "ConvoyClient",
    "ConvoyError",
    "Event",
    "FileInfo",
    "Files",
    "Forbidden",
    "GatewayUnavailable",
    "InvalidURL",
    "LimitReached",
    "NotFound",
    "SandboxFailed",
    "Snapshot",
    "Task",
    "TaskFailed",
    "TaskOutput",
    "TaskResult",
    "TaskRun",
    "TaskStatus",
    "Terminal",
    "Unauthorized",
    "UnexpectedResponse",
    "WebSocketClosed",
    "python",
    "shell",
]
