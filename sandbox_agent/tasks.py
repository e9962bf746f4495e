"""The task manager: create, run, list, cancel.

Contract:
- A task goes PENDING -> RUNNING -> COMPLETED | ERROR, or via CANCELLING to
  CANCELLED; every change is recorded as a ``TaskStatusUpdate`` event and as a
  snapshot line in ``<state_dir>/tasks.jsonl``, so finished tasks are listed
  after a restart. Tasks that were not finished when the agent stopped are
  marked ERROR ("agent restarted") when it starts again.
- A process runnable's ``cwd`` is checked against the workspace jail when the
  task is created (400/403/404 before anything runs).
- While the event log or the task records cannot be written (disk full),
  ``create`` refuses with :class:`~sandbox_agent.journal.JournalUnwritable`
  (507) before anything runs: a task whose progress cannot be recorded is not
  started.
- A process killed by the kernel's OOM killer ends ERROR with an error that
  says "out of memory" (see :mod:`sandbox_agent.runnables.oom`).
- A Shell or Python task created with ``"stdin": true`` keeps its stdin open (a
  pipe) while it runs: :meth:`stdin` gives it to the writers (see
  :mod:`sandbox_agent.stdin`).
- ``cancel`` answers once the task is final (or after the kill grace period
  plus a margin, still CANCELLING); a finished task cannot be cancelled (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from sandbox_agent.errors import Conflict, NotFound, Stopping, Unprocessable
from sandbox_agent.events import EventLog
from sandbox_agent.files import Workspace
from sandbox_agent.journal import Journal
from sandbox_agent.protocol import Task, TaskCreate, TaskStatus, TaskStatusUpdate, Ticker
from sandbox_agent.runnables import Outcome, TaskContext, runner_for
from sandbox_agent.settings import AgentSettings
from sandbox_agent.stdin import TaskStdin

log = logging.getLogger(__name__)

JSONL_NAME = "tasks.jsonl"


def _now() -> datetime:
    return datetime.now(UTC)


class TaskManager:
    def __init__(self, settings: AgentSettings, events: EventLog, workspace: Workspace) -> None:
        self._settings = settings
        self._events = events
        self._workspace = workspace
        self._journal = Journal(settings.state_dir / JSONL_NAME)
        self._tasks: dict[UUID, Task] = {}
        self._order: list[UUID] = []
        self._running: dict[UUID, asyncio.Task[Outcome]] = {}
        self._stdin: dict[UUID, TaskStdin] = {}
        self._closing = False
        #: The agent's :attr:`Freezer.thawed <sandbox_agent.freezer.Freezer.thawed>`, handed to every task.
        self.thawed: asyncio.Event | None = None

    async def open(self) -> None:
        """Reload finished tasks; mark those a previous run left unfinished as ERROR."""
        await asyncio.to_thread(self._journal.load, self._load_line)
        self._journal.start()
        for task in list(self._tasks.values()):
            if not task.status.is_final:
                self._set(task, TaskStatus.ERROR, error="agent restarted", finished_at=_now())

    def _load_line(self, offset: int, line: bytes) -> bool:
        try:
            task = Task.model_validate_json(line)
        except ValueError:
            return False
        if task.id not in self._tasks:
            self._order.append(task.id)
        self._tasks[task.id] = task
        return True

    async def close(self) -> None:
        """Cancel every running task (ending its processes) and write the records."""
        self._closing = True
        for task_id in list(self._running):
            task = self._tasks[task_id]
            if not task.status.is_final and task.status is not TaskStatus.CANCELLING:
                self._set(task, TaskStatus.CANCELLING)
            self._running[task_id].cancel()
        if self._running:
            await asyncio.wait(list(self._running.values()))
        await self._journal.close()

    # --- queries --------------------------------------------------------------

    def get(self, task_id: UUID) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task

    def page(
        self, after: int, limit: int, statuses: list[TaskStatus] | None
    ) -> tuple[list[Task], int | None]:
        """Tasks in creation order after ordinal ``after``; returns the page and the next cursor."""
        wanted = set(statuses) if statuses else None
        results: list[Task] = []
        index = after
        while index < len(self._order) and len(results) < limit:
            task = self._tasks[self._order[index]]
            index += 1
            if wanted is None or task.status in wanted:
                results.append(task)
        more = (
            any(wanted is None or self._tasks[task_id].status in wanted for task_id in self._order[index:])
            if len(results) == limit
            else False
        )
        return results, (index if more else None)

    # --- commands -------------------------------------------------------------

    async def create(self, request: TaskCreate) -> Task:
        if self._closing:
            raise Stopping("the agent is stopping and starts no new tasks")
        self._events.check_writable()
        self._journal.check_writable()
        runnable = request.runnable
        task = Task(
            id=uuid4(), title=request.title, runnable=runnable, status=TaskStatus.PENDING, created_at=_now()
        )
        try:  # JSON lets a lone surrogate through; our records and events are UTF-8
            record = task.model_dump_json().encode()  # also the PENDING record, written below
        except ValueError:
            raise Unprocessable(
                "the task contains text that is not valid UTF-8 (a lone surrogate?)"
            ) from None
        cwd = self._workspace.root  # the default cwd: the root, which the agent made and keeps
        if not isinstance(runnable, Ticker) and runnable.cwd not in (".", ""):
            cwd = (await self._workspace.directory(runnable.cwd)).real
        self._tasks[task.id] = task
        self._order.append(task.id)
        self._set(task, TaskStatus.PENDING, record=record)
        context = TaskContext(
            task_id=task.id,
            emit=self._events.append,
            settings=self._settings,
            workspace_root=self._workspace.root,
            cwd=cwd,
            on_output=lambda size, truncated: self._on_output(task, size, truncated),
            thawed=self.thawed,
        )
        if getattr(runnable, "stdin", False):
            context.stdin = self._stdin[task.id] = TaskStdin(task.id)
        running = asyncio.create_task(self._run(task, context), name=f"task:{task.id}")
        self._running[task.id] = running
        running.add_done_callback(lambda done: self._finished(task, done))
        return task

    async def cancel(self, task_id: UUID) -> Task:
        task = self.get(task_id)
        if task.status.is_final:
            raise Conflict(f"task {task_id} is already {task.status.value}")
        running = self._running.get(task_id)
        if task.status is not TaskStatus.CANCELLING:
            self._set(task, TaskStatus.CANCELLING)
        if running is not None:
            running.cancel()
            await asyncio.wait({running}, timeout=self._settings.kill_grace_seconds + 5.0)
        return task

    def stdin(self, task_id: UUID) -> TaskStdin:
        """The open stdin of a running task (404 unknown; 409 finished, not started with
        ``"stdin": true``, or closed)."""
        task = self.get(task_id)
        if task.status.is_final:
            raise Conflict(f"task {task_id} is already {task.status.value}: it takes no more stdin")
        if not getattr(task.runnable, "stdin", False):
            raise Conflict(f'task {task_id} was not started with "stdin": true: it has no open stdin')
        pipe = self._stdin.get(task_id)
        if pipe is None or pipe.closed:
            raise Conflict(f"the stdin of task {task_id} is closed")
        return pipe

    # --- waiting (POST /task?wait=true: sandbox_agent.task_stream) ------------

    async def wait_final(self, task_id: UUID) -> Task:
        """The task once it is final (its final ``TaskStatusUpdate`` already appended).
        Raises :class:`NotFound` for an unknown task."""
        task = self.get(task_id)
        running = self._running.get(task_id)
        if running is not None and not task.status.is_final:
            # ``_finished`` was attached first, so it has run when this wait returns.
            await asyncio.wait({running})
        return task

    # --- running --------------------------------------------------------------

    async def _run(self, task: Task, context: TaskContext) -> Outcome:
        self._set(task, TaskStatus.RUNNING, started_at=_now())
        return await runner_for(task.runnable.type)(task.runnable, context)

    def _finished(self, task: Task, done: asyncio.Task[Outcome]) -> None:
        self._running.pop(task.id, None)
        pipe = self._stdin.pop(task.id, None)
        if pipe is not None:
            pipe.detach()
        if task.status.is_final:
            return
        if done.cancelled():
            self._set(task, TaskStatus.CANCELLED, finished_at=_now())
            return
        error = done.exception()
        if error is not None:
            log.error("task %s failed", task.id, exc_info=error)
            self._set(task, TaskStatus.ERROR, error=f"internal error: {error}", finished_at=_now())
            return
        outcome = done.result()
        status = TaskStatus.ERROR if outcome.error else TaskStatus.COMPLETED
        self._set(task, status, exit_code=outcome.exit_code, error=outcome.error, finished_at=_now())

    def _on_output(self, task: Task, size: int, truncated: bool) -> None:
        task.output_bytes = size
        if truncated is not task.output_truncated:  # once per task at most: a model's setattr costs
            task.output_truncated = truncated

    def _set(self, task: Task, status: TaskStatus, record: bytes | None = None, **fields: Any) -> None:
        """Move ``task`` to ``status`` (and ``fields``): its event, then its snapshot line
        (``record``: that line already made)."""
        task.status = status
        for name, value in fields.items():
            setattr(task, name, value)
        with contextlib.suppress(RuntimeError):  # log closed or unwritable: the task still ends
            self._events.append(
                TaskStatusUpdate(task_id=task.id, status=status, exit_code=task.exit_code, error=task.error)
            )
        with contextlib.suppress(RuntimeError):
            self._journal.append(record if record is not None else task.model_dump_json().encode())
