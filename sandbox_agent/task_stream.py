"""``POST /task?wait=true``: create a task and answer its result as one stream.

Contract (the answer is ``201``, :data:`~sandbox_agent.protocol.TASK_STREAM_MEDIA_TYPE`,
one :data:`~sandbox_agent.protocol.TaskStreamRecord` per line):

- The first line is the task as created (``{"type": "task", "task": {...}}``): the
  client knows its id (to cancel it) before anything ran.
- Then every event of that task, in ``seq`` order, as the event log stored it
  (``{"type": "event", "event": {...}}``): ``TaskOutput``, ``OutputTruncated``,
  ``Tick``, ``TaskStatusUpdate``. The log records them all the same; this is a view.
- The last line is the task once it is final, with its status and exit code.
  A stream that ends without it was cut short (the agent stopped, the connection
  broke): the task's events are in the log, to follow from the last ``seq`` seen.
- A request the agent refuses (bad runnable, bad ``cwd``, disk full) answers
  the same JSON error as without ``wait``, before anything runs.
- The client going away ends the stream, not the task: it runs to its end and
  stays in the event log (``DELETE /task/{id}`` cancels it). A dropped connection
  never kills work, exactly as for a task created without ``wait``.
- What the stream holds is one batch of the log (about 1 MiB): a client that
  reads slowly is read for, from the log, at its own pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Send

from sandbox_agent.agent import Agent
from sandbox_agent.events import LogClosed
from sandbox_agent.followers import Follower, FollowerTooSlow
from sandbox_agent.protocol import RESERVED_TYPES, TASK_STREAM_MEDIA_TYPE, Task, TaskCreate

_EVENT_HEAD = b'{"type":"event","event":'
_TASK_HEAD = b'{"type":"task","task":'


def _task_line(task: Task) -> bytes:
    return _TASK_HEAD + task.model_dump_json().encode() + b"}\n"


class _LastLine(bytes):
    """The answer's last line: it goes out with the end of the answer, in one write."""


class _TaskStreamResponse(StreamingResponse):
    """A stream whose :class:`_LastLine` ends it in the same message as the end of the body:
    the client reads the final state and the end of the answer at once, and can send its next
    request on the same connection without waiting for one more packet."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            assert isinstance(chunk, bytes)  # lines() yields bytes only
            last = isinstance(chunk, _LastLine)
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": not last})
            if last:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _of_task(raw: bytes, task_id: str) -> bool:
    """Whether the stored envelope ``raw`` is a system event of task ``task_id`` (a client
    event that names the task in its own fields is not the task's)."""
    detail = json.loads(raw)["detail"]
    return bool(detail.get("task_id") == task_id and detail.get("type") in RESERVED_TYPES)


async def stream_task(agent: Agent, request: TaskCreate) -> StreamingResponse:
    """Create the task (refusals raise as for a plain create) and stream it (module docstring)."""
    reader = _Reader(agent, agent.events.last_seq)  # from before the task's first event
    task = await agent.tasks.create(request)
    first = _task_line(task)  # as created: the task object changes as it runs
    return _TaskStreamResponse(reader.lines(task, first), status_code=201, media_type=TASK_STREAM_MEDIA_TYPE)


class _Reader:
    """Reads the event log after ``after_seq``, for one task's stream. Its follower is
    made when the stream is first read (an answer never sent registers nothing)."""

    def __init__(self, agent: Agent, after_seq: int) -> None:
        self._agent = agent
        self._after_seq = after_seq
        self._follower: Follower  # set by lines()

    def close(self) -> None:
        self._follower.close()

    @property
    def _drained(self) -> bool:
        return self._follower.next_seq > self._agent.events.last_seq

    async def lines(self, task: Task, first: bytes) -> AsyncIterator[bytes]:
        task_id = str(task.id)
        self._follower = self._agent.events.follow(self._after_seq)
        final = asyncio.ensure_future(self._agent.tasks.wait_final(task.id))
        stopping = asyncio.ensure_future(self._agent.stopping.wait())  # one for the whole stream
        try:
            yield first
            while True:
                batch, ended = await self._next(final, stopping)
                lines = b"".join(_EVENT_HEAD + raw + b"}\n" for raw in batch if _of_task(raw, task_id))
                if ended and self._drained:  # the task's last events and its final state: one write
                    yield _LastLine(lines + _task_line(final.result()))
                    return
                if lines:
                    yield lines
        except LogClosed:
            return  # the agent is stopping: cut short, as documented
        finally:
            self.close()
            final.cancel()
            stopping.cancel()

    async def _next(
        self, final: asyncio.Future[Task], stopping: asyncio.Future[Any]
    ) -> tuple[list[bytes], bool]:
        """The next batch of the log (possibly empty) and whether the task is final by then.
        Once it is, its last events are in the log already: they are read without waiting."""
        if final.done():
            return ([] if self._drained else await self._batch()), True
        reading = asyncio.ensure_future(self._batch())
        either: list[asyncio.Future[Any]] = [reading, final, stopping]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self._agent.stopping.is_set() and not final.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
            raise LogClosed("the agent is stopping")
        if not reading.done():
            reading.cancel()  # nothing is lost: a cancelled read does not move the follower
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        if reading.cancelled():
            return [], final.done()
        return reading.result(), final.done()

    async def _batch(self) -> list[bytes]:
        try:
            return await self._follower.next_batch()
        except FollowerTooSlow:
            # The lag guard protects pushed streams; this one pulls from the log at the
            # client's pace, so it carries on from where it was with a fresh follower.
            behind = self._follower
            behind.close()
            self._follower = self._agent.events.follow(behind.next_seq - 1)
            return []
