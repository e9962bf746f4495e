"""Tasks of one conversation: start one, iterate its output as it arrives, wait, cancel.

A task's output is read from the conversation's event log (``TaskOutput`` events, in ``seq``
order), never from a side channel, so nothing is missed: :class:`AsyncTaskRun` follows the
log from just before the task's first event and resumes from the last seq it saw.

:func:`start_streamed_task` creates the task with ``?wait=true``: the answer itself carries
the task's events, as the log stored them, then its final state (one round trip for a whole
command). Should that answer break off, the run resumes by following the log from the last
seq it carried, so the result is the same either way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from uuid import UUID

from pydantic import RootModel

from gateway.client._events import follow_events, history
from gateway.client._exceptions import GatewayUnavailable, SandboxFailed, TaskFailed, UnexpectedResponse
from gateway.client._lane import LaneAnswer
from gateway.client._terminals import write_stdin
from gateway.client._transport import Connection, Records, parse_frame, parse_json, parse_model
from sandbox_agent.protocol import (
    Event,
    OutputTruncated,
    Runnable,
    StdinWritten,
    Task,
    TaskOutput,
    TaskStatus,
    TaskStatusUpdate,
    TaskStreamEvent,
    TaskStreamRecord,
)


class _Record(RootModel[TaskStreamRecord]):
    """One line of a ``?wait=true`` answer."""


@dataclass(frozen=True)
class TaskResult:
    """How a task ended, with everything it printed (up to the agent's output budget)."""

    task: Task
    stdout: str
    stderr: str
    #: Set when the task passed its output budget; the rest of its output is in ``truncated.path``.
    truncated: OutputTruncated | None = None

    @property
    def exit_code(self) -> int | None:
        return self.task.exit_code

    @property
    def status(self) -> TaskStatus:
        return self.task.status

    @property
    def error(self) -> str | None:
        return self.task.error

    @property
    def ok(self) -> bool:
        return self.task.status is TaskStatus.COMPLETED and self.task.exit_code in (0, None)

    def check(self) -> TaskResult:
        """This result if the task completed with exit code 0; else raise :class:`TaskFailed`."""
        if self.ok:
            return self
        task = self.task
        if task.status is TaskStatus.COMPLETED:
            what = f"exited with code {task.exit_code}"
        else:
            what = f"ended {task.status.value}" + (f": {task.error}" if task.error else "")
        raise TaskFailed(
            f"task {task.id} ({task.title or task.runnable.type}) {what}",
            exit_code=task.exit_code,
            error=task.error,
            status=task.status.value,
        )


class AsyncTaskRun:
    """A started task. Iterate :meth:`output` (or :meth:`events`) to see it live, or :meth:`wait`.

    Output seen while iterating is also collected, so :meth:`wait` afterwards still returns all
    of it. Iterate from one consumer at a time.
    """

    def __init__(
        self,
        conn: Connection,
        conversation_id: UUID,
        task: Task,
        after_seq: int | None,
        records: AsyncGenerator[Task | Event, None] | None = None,
    ) -> None:
        self._conn = conn
        self.conversation_id = conversation_id
        self.task = task
        #: None: not known yet (a streamed run that saw no event): found before following.
        self._last_seq = after_seq
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._truncated: OutputTruncated | None = None
        self._final: TaskStatusUpdate | None = None
        self._records = records
        self._settled = False  # the final task came with the records: no need to fetch it

    @property
    def id(self) -> UUID:
        return self.task.id

    @property
    def done(self) -> bool:
        return self._final is not None

    async def events(self) -> AsyncGenerator[Event, None]:
        """This task's events (output, ticks, status changes) until its final status, inclusive."""
        if self._final is not None:
            return
        if self._records is not None:
            async with aclosing(self._streamed()) as streamed:
                async for event in streamed:
                    yield event
            if self._final is not None:
                return
        if self._last_seq is None:
            self._last_seq = await _seq_before(self._conn, self.conversation_id, self.task)
        stream = follow_events(self._conn, self.conversation_id, self._last_seq, stop_when_ended=True)
        async with aclosing(stream) as events:
            async for event in events:
                if event.seq:
                    self._last_seq = event.seq
                if not self._absorb(event):
                    continue
                yield event
                if self._final is not None:
                    return
        raise SandboxFailed(
            f"conversation {self.conversation_id} ended before task {self.task.id} finished",
            reason="the conversation ended",
        )

    def _absorb(self, event: Event) -> bool:
        """Take in one event; whether it is this task's."""
        detail = event.detail
        if getattr(detail, "task_id", None) != self.task.id:
            return False
        if isinstance(detail, TaskOutput):
            (self._stdout if detail.stream == "stdout" else self._stderr).append(detail.data)
        elif isinstance(detail, OutputTruncated):
            self._truncated = detail
        elif isinstance(detail, TaskStatusUpdate) and detail.status.is_final:
            self._final = detail
        return True

    async def _streamed(self) -> AsyncGenerator[Event, None]:
        """The task's events from the creating request's answer, then its final task. The
        answer is closed when this ends, however it ends: a run that goes on follows the log."""
        records, self._records = self._records, None
        assert records is not None
        async with aclosing(records):
            try:
                async for record in records:
                    if self._settled:
                        return  # more than the answer should hold: closed (its connection too)
                    if isinstance(record, Task):
                        self.task = record
                        if record.status.is_final:
                            if self._final is None:  # its final event could not be recorded
                                self._final = TaskStatusUpdate(
                                    task_id=record.id,
                                    status=record.status,
                                    exit_code=record.exit_code,
                                    error=record.error,
                                )
                            # Read on to the answer's end (it comes with this line), so that its
                            # connection carries the next request instead of being closed.
                            self._settled = True
                        continue
                    self._last_seq = record.seq
                    if self._absorb(record):
                        yield record
            except (GatewayUnavailable, UnexpectedResponse):
                return  # broke off: the log has the rest

    async def close(self) -> None:
        """Let go of the creating request's answer, if it is still open (a run that is not
        iterated to its end; iterating later follows the log instead)."""
        records, self._records = self._records, None
        if records is not None:
            await records.aclose()

    async def output(self) -> AsyncGenerator[TaskOutput, None]:
        """The task's stdout and stderr chunks, in the order it wrote them, until it ends."""
        async for event in self.events():
            if isinstance(event.detail, TaskOutput):
                yield event.detail

    async def wait(self) -> TaskResult:
        """Wait for the task to end; its final state and all its output."""
        async for _ in self.events():
            pass
        if not self._settled:
            self.task = await self.refresh()
        return TaskResult(self.task, "".join(self._stdout), "".join(self._stderr), self._truncated)

    async def refresh(self) -> Task:
        """The task as the sandbox sees it now."""
        path = f"/conversation/{self.conversation_id}/task/{self.task.id}"
        self.task = await self._conn.get_model(path, Task)
        return self.task

    async def write_stdin(self, data: bytes | str, *, eof: bool = False) -> StdinWritten:
        """Write to the task's stdin (it was started with ``stdin=True``); ``eof`` closes it
        afterwards. A task without open stdin (or finished) raises :class:`Conflict`."""
        return await write_stdin(self._conn, self.conversation_id, self.task.id, data, eof)

    async def cancel(self) -> Task:
        """Ask the sandbox to cancel the task (its whole process group); does not wait for the end."""
        path = f"/conversation/{self.conversation_id}/task/{self.task.id}"
        response = await self._conn.request("DELETE", path)
        if response.content:
            self.task = parse_model(Task, parse_json(response))
        return self.task


async def start_task(
    conn: Connection, conversation_id: UUID, runnable: Runnable, title: str = ""
) -> AsyncTaskRun:
    """Create a task and a run that follows it from just before its first event."""
    body = {"runnable": runnable.model_dump(mode="json"), "title": title}
    response = await conn.request("POST", f"/conversation/{conversation_id}/task", json_body=body)
    task = parse_model(Task, parse_json(response))
    return AsyncTaskRun(conn, conversation_id, task, await _seq_before(conn, conversation_id, task))


async def start_streamed_task(
    conn: Connection, conversation_id: UUID, runnable: Runnable, title: str = ""
) -> AsyncTaskRun:
    """Create a task with ``?wait=true``: answers once the task exists (its first record), with
    the rest of the answer (its events, its final state) read as the run is iterated."""
    body = {"runnable": runnable.model_dump(mode="json"), "title": title}
    path = f"/conversation/{conversation_id}/task"
    answer = await conn.open_records("POST", path, params={"wait": "true"}, json_body=body)
    if not answer.streamed:  # a gateway that does not stream: follow the log as start_task does
        try:
            task = parse_model(Task, await answer.json())
        finally:
            await answer.aclose()
        return AsyncTaskRun(conn, conversation_id, task, await _seq_before(conn, conversation_id, task))
    records = _records(answer)
    try:
        first = await anext(records)
    except BaseException:
        await records.aclose()
        raise
    if not isinstance(first, Task):
        await records.aclose()
        raise UnexpectedResponse(f"POST {path}?wait=true: the answer did not begin with the task")
    return AsyncTaskRun(conn, conversation_id, first, None, records)


async def _records(answer: Records | LaneAnswer) -> AsyncGenerator[Task | Event, None]:
    """The answer's records as tasks and events; closes the answer when closed."""
    try:
        async with aclosing(answer.lines()) as lines:
            async for line in lines:
                record = parse_frame(_Record, line).root
                yield record.event if isinstance(record, TaskStreamEvent) else record.task
    finally:
        await answer.aclose()


async def _seq_before(conn: Connection, conversation_id: UUID, task: Task) -> int:
    """The seq just before the task's first event: following from there misses none of its output.
    0 (all history, filtered client-side) if the task has logged nothing yet."""
    async with aclosing(history(conn, conversation_id, task_id=task.id, limit=1)) as first:
        async for event in first:
            return event.seq - 1
    return 0
