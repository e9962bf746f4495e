"""The convoy Python client: :class:`AsyncConvoyClient` (asyncio) and :class:`ConvoyClient` (blocking).

::

    from gateway.client import ConvoyClient

    with ConvoyClient("http://127.0.0.1:8000") as client, client.create(title="demo") as convo:
        convo.upload("hello.py")
        result = convo.run("python3 hello.py")
        print(result.exit_code, result.stdout, end="")

Every failure is a :class:`ConvoyError`; the subclasses say which kind. The pieces live in
private ``gateway.client._*`` modules (http transport, events, tasks, files, the sync wrapper); import
them from here.
"""

from __future__ import annotations

from gateway.client._async import AsyncConvoyClient
from gateway.client._conversation import AsyncConversationHandle
from gateway.client._events import ConversationEnded
from gateway.client._exceptions import (
    BadRequest,
    Conflict,
    ConvoyError,
    Forbidden,
    GatewayUnavailable,
    LimitReached,
    NotFound,
    SandboxFailed,
    TaskFailed,
    Unauthorized,
)
from gateway.client._sync import ConversationHandle, ConvoyClient, TaskRun
from gateway.client._tasks import AsyncTaskRun, TaskResult, python, shell
from gateway.models import Conversation, ConversationLimits, ConversationStatus
from sandbox_agent.protocol import Event, FileInfo, Task, TaskOutput, TaskStatus

__all__ = [
    "AsyncConversationHandle",
    "AsyncConvoyClient",
    "AsyncTaskRun",
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
    "Forbidden",
    "GatewayUnavailable",
    "LimitReached",
    "NotFound",
    "SandboxFailed",
    "Task",
    "TaskFailed",
    "TaskOutput",
    "TaskResult",
    "TaskRun",
    "TaskStatus",
    "Unauthorized",
    "python",
    "shell",
]
