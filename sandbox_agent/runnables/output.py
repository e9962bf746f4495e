"""A task's output budget: stream the head as events, keep the rest in a workspace file.

Contract: up to ``max_task_output_bytes`` bytes (both streams together) are
emitted as ``TaskOutput`` events, decoded as UTF-8 incrementally (a character
split across reads is not mangled; invalid bytes become U+FFFD). Past the
budget nothing is dropped silently: one ``OutputTruncated`` event names the
workspace file (``.convoy/output/<task_id>.log``) that receives every further
byte, in arrival order.

A full disk does not stall the task: output that cannot be recorded (the event
log refuses it, the overflow file cannot be written) is dropped with a warning
in the agent's log, and the pipes keep being read.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
from pathlib import Path
from typing import Literal

from sandbox_agent.fdio import write_all
from sandbox_agent.journal import JournalUnwritable
from sandbox_agent.protocol import OutputTruncated, TaskOutput
from sandbox_agent.runnables import TaskContext

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
_UTF8 = codecs.getincrementaldecoder("utf-8")


class OutputSink:
    def __init__(self, context: TaskContext) -> None:
        self._context = context
        self._budget = context.settings.max_task_output_bytes
        self._emitted = 0
        self.total = 0
        self.truncated = False
        # One per stream, made when the stream first has output (most tasks write to one).
        self._decoders: dict[Stream, codecs.IncrementalDecoder] = {}
        self.rel_path = f"{context.settings.output_dir_name}/{context.task_id}.log"
        self._fd: int | None = None
        self._dropping = False

    def write_nowait(self, stream: Stream, data: bytes) -> bool:
        """Take ``data`` at once when all of it fits in the budget (no file to write);
        ``False``: nothing was taken, :meth:`write` it."""
        if self.truncated or len(data) > self._budget - self._emitted:
            return False
        self.total += len(data)
        self._emitted += len(data)
        self._emit(stream, self._decoder(stream).decode(data))
        self._context.on_output(self.total, self.truncated)
        return True

    async def write(self, stream: Stream, data: bytes) -> None:
        self.total += len(data)
        rest = data
        if not self.truncated:
            room = self._budget - self._emitted
            head, rest = data[:room], data[room:]
            if head:
                self._emitted += len(head)
                self._emit(stream, self._decoder(stream).decode(head, final=bool(rest)))
            if rest:
                await self._start_overflow()
        if rest and self._fd is not None:
            try:
                await asyncio.to_thread(write_all, self._fd, rest)
            except OSError as error:
                log.warning("task %s: overflow file not written further: %s", self._context.task_id, error)
                await self._close_overflow()
        self._context.on_output(self.total, self.truncated)

    async def _start_overflow(self) -> None:
        self.truncated = True
        self._flush_decoders()
        try:
            self._fd = await asyncio.to_thread(_open_overflow, self._context.workspace_root, self.rel_path)
        except OSError as error:
            log.warning("task %s: cannot write overflow file: %s", self._context.task_id, error)
        self._record(
            OutputTruncated(task_id=self._context.task_id, limit_bytes=self._budget, path=self.rel_path)
        )

    def _decoder(self, stream: Stream) -> codecs.IncrementalDecoder:
        decoder = self._decoders.get(stream)
        if decoder is None:
            decoder = self._decoders[stream] = _UTF8(errors="replace")
        return decoder

    def _flush_decoders(self) -> None:
        """Emit what the decoders still hold (stdout's first, as ever)."""
        for stream in _STREAMS:
            decoder = self._decoders.get(stream)
            if decoder is not None:
                self._emit(stream, decoder.decode(b"", final=True))

    def _emit(self, stream: Stream, text: str) -> None:
        if text:
            self._record(TaskOutput(task_id=self._context.task_id, stream=stream, data=text))

    def _record(self, detail: TaskOutput | OutputTruncated) -> None:
        try:
            self._context.emit(detail)
        except JournalUnwritable as error:
            if not self._dropping:  # once per task: a full disk must not flood the log too
                log.warning("task %s: output dropped: %s", self._context.task_id, error)
            self._dropping = True

    async def close(self) -> None:
        """Emit what the decoders still hold; close the overflow file."""
        if not self.truncated:
            self._flush_decoders()
        await self._close_overflow()

    async def _close_overflow(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await asyncio.to_thread(os.close, fd)


def _open_overflow(root: Path, rel_path: str) -> int:
    target = root / rel_path
    target.parent.mkdir(parents=True, exist_ok=True)
    real_parent = Path(os.path.realpath(target.parent))
    if real_parent != root and root not in real_parent.parents:
        raise PermissionError(f"{rel_path} leaves the workspace")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW
    return os.open(real_parent / target.name, flags, 0o644)
