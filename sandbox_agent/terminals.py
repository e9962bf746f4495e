"""PTY terminals with byte-offset replay.

Contract:
- :meth:`TerminalManager.create` starts the command on a new PTY, in a new session
  whose controlling terminal it is, in the workspace root, with the task environment
  (no token) plus ``TERM=xterm-256color``, as the task user (:mod:`sandbox_agent.ptys`).
  No command: the task user's login shell as a login shell; ``/bin/sh`` when the
  user has none (``nologin``, ``false``, no passwd entry).
- Nothing blocks the event loop: the PTY's master is non-blocking and read from
  ``loop.add_reader``; writes to it wait for ``add_writer``; the output file is
  written in a worker thread (:class:`~sandbox_agent.spill.SpillFile`).
- Every output byte has an offset (0 = the first). The output is kept in
  ``<state_dir>/terminals/<id>.out``; retention: at least the last
  ``terminal_keep_bytes`` (default 4 MiB), at most twice that on disk. A viewer
  asking for an older offset is sent ``{"type": "skipped", "requested", "offset"}``
  and the bytes from the oldest kept one: it is told, never silently short.
- Viewers (:meth:`RunningTerminal.next_chunk`) each read from their own offset: the
  bytes they get are exactly the terminal's output from there, with no gap and no
  duplicate, history and live alike. A terminal lives on with no viewer at all.
- When the leader exits, whatever it left in its session (its jobs have process
  groups of their own: see :mod:`sandbox_agent.sessions`) gets SIGHUP (a hangup),
  then SIGTERM and SIGKILL after ``kill_grace_seconds``; the output still
  in the PTY is read, then the terminal is EXITED and ``TerminalExited`` (with the
  exit code; negative: killed by that signal) goes into the event log. The output
  itself never does.
- :meth:`TerminalManager.delete` ends a running terminal's session the same
  way (SIGHUP first: what an interactive shell obeys), then forgets it and its file.
  Exited terminals stay listed (replayable) until deleted; beyond ``max_terminals``
  exited ones, the oldest are forgotten. At most ``max_terminals`` run at once (429).
- Terminals do not survive the agent: stopping it ends them; starting it empties the
  terminals directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sandbox_agent.errors import LimitReached, NotFound, Stopping, Unprocessable
from sandbox_agent.events import EventLog
from sandbox_agent.protocol import Terminal, TerminalCreate, TerminalExited, TerminalStatus
from sandbox_agent.ptys import PtyExit, command_argv, login_shell, set_size, spawn
from sandbox_agent.sessions import Session
from sandbox_agent.settings import AgentSettings
from sandbox_agent.spill import SpillFile

log = logging.getLogger(__name__)

#: Largest read from a PTY master (the kernel hands out at most about 4 KiB per read) ...
READ_BYTES = 64 * 1024
#: ... and the most taken per wake-up, so that viewers get fewer, larger frames.
WAKE_BYTES = 256 * 1024


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _abandon(master: int, transport: asyncio.SubprocessTransport, grace: float) -> None:
    """A terminal whose output cannot be kept is not left running: end its session."""
    os.close(master)
    session = Session(transport.get_pid(), grace)
    await session.hang_up()
    await session.terminate()
    transport.close()


class RunningTerminal:
    """One PTY, its session, its output and its viewers' wake-up."""

    def __init__(self, info: Terminal, master: int, spill: SpillFile, grace: float) -> None:
        self.info = info
        self.master = master
        self.spill = spill
        self.grace = grace
        self.finished = asyncio.Event()  # EXITED, every output byte appended
        self._changed = asyncio.Event()
        self._eof = asyncio.Event()
        self._input = asyncio.Lock()
        self._master_open = True
        self._loop = asyncio.get_running_loop()
        self.session: Session | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self._resumer: asyncio.Task[None] | None = None

    def describe(self) -> Terminal:
        return self.info.model_copy(update={"size": self.spill.size, "kept_from": self.spill.kept_from})

    # --- output -----------------------------------------------------------------

    def start_reading(self) -> None:
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        taken, ended = 0, False
        while taken < WAKE_BYTES:
            try:
                data = os.read(self.master, READ_BYTES)
            except BlockingIOError:
                break
            except OSError:  # EIO: every slave end is closed
                data = b""
            if not data:
                ended = True
                break
            self.spill.append(data)
            taken += len(data)
        if taken:
            self.notify()
        if ended:
            self._loop.remove_reader(self.master)
            self._eof.set()
            return
        if self.spill.backlogged:  # the file is not keeping up: let the PTY fill instead of memory
            self._loop.remove_reader(self.master)
            self._resumer = self._loop.create_task(self._resume_reading())

    async def _resume_reading(self) -> None:
        await self.spill.drained()
        if self._master_open and not self._eof.is_set():
            self.start_reading()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_chunk(self, offset: int, limit: int) -> tuple[bytes, int] | None:
        """The next bytes from ``offset`` on as ``(data, start)`` (``start > offset``: the
        bytes between were dropped), waiting for them; ``None`` once the terminal has
        exited and nothing is left to read."""
        while True:
            changed = self._changed
            finished = self.finished.is_set()
            data, start = await self.spill.read(offset, limit)
            if data:
                return data, start
            if finished:
                return None
            await changed.wait()

    # --- input ------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Type ``data`` into the terminal (waits while its input buffer is full); a
        terminal that has exited takes nothing."""
        async with self._input:
            view = memoryview(data)
            while view and self._master_open:
                try:
                    view = view[os.write(self.master, view) :]
                except BlockingIOError:
                    await self._writable()
                except OSError:
                    return

    async def _writable(self) -> None:
        ready = self._loop.create_future()
        self._loop.add_writer(self.master, _settle, ready)
        try:  # bounded, so that a master closed meanwhile is noticed
            await asyncio.wait({ready}, timeout=1.0)
        finally:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(self.master)

    def resize(self, cols: int, rows: int) -> None:
        if self._master_open:
            set_size(self.master, cols, rows)
            self.info.cols, self.info.rows = cols, rows

    # --- the end ----------------------------------------------------------------

    async def drain_and_close(self) -> None:
        """After the leader exits: end the rest of its session, read what is left, close the master."""
        if self.session is not None:
            await self.session.hang_up()
            await self.session.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace + 1.0):
                await self._eof.wait()
        self._master_open = False
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.master)
        os.close(self.master)


class TerminalManager:
    def __init__(self, settings: AgentSettings, events: EventLog) -> None:
        self._settings = settings
        self._events = events
        self._terminals: dict[UUID, RunningTerminal] = {}
        self._closing = False
        self._shell: str | None = None

    async def open(self) -> None:
        """Empty the terminals directory: what a previous run left is of terminals that ended with it."""
        folder = self._settings.terminals_dir
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)

    def describe_all(self) -> list[Terminal]:
        return [terminal.describe() for terminal in self._terminals.values()]

    def get(self, terminal_id: UUID) -> RunningTerminal:
        terminal = self._terminals.get(terminal_id)
        if terminal is None:
            raise NotFound(f"no terminal {terminal_id}")
        return terminal

    async def create(self, request: TerminalCreate) -> Terminal:
        if self._closing:
            raise Stopping("the agent is stopping and starts no new terminals")
        running = [t for t in self._terminals.values() if not t.finished.is_set()]
        if len(running) >= self._settings.max_terminals:
            raise LimitReached(f"at most {self._settings.max_terminals} terminals may run at once")
        try:  # JSON lets a lone surrogate through; the description we answer is UTF-8
            request.model_dump_json()
        except ValueError:
            raise Unprocessable(
                "the command contains text that is not valid UTF-8 (a lone surrogate?)"
            ) from None
        if self._shell is None:
            self._shell = await asyncio.to_thread(login_shell)
        argv, program = command_argv(request.command, self._shell)
        terminal_id = uuid4()
        try:
            master, transport, protocol = await spawn(
                argv, program, request.cols, request.rows, self._settings.workspace
            )
        except OSError as error:
            raise Unprocessable(f"cannot start {argv[0]!r}: {error.strerror or error}") from None
        except ValueError as error:  # what the OS cannot take (a lone surrogate in an argument)
            raise Unprocessable(f"cannot start {argv[0]!r}: {error}") from None
        info = Terminal(
            id=terminal_id,
            command=argv,
            cols=request.cols,
            rows=request.rows,
            status=TerminalStatus.RUNNING,
            created_at=datetime.now(UTC),
        )
        path = self._settings.terminals_dir / f"{terminal_id}.out"
        try:
            spill = await SpillFile.create(path, self._settings.terminal_keep_bytes)
        except OSError:
            await _abandon(master, transport, self._settings.kill_grace_seconds)
            raise
        terminal = RunningTerminal(info, master, spill, self._settings.kill_grace_seconds)
        terminal.session = Session(transport.get_pid(), self._settings.kill_grace_seconds)
        terminal.start_reading()
        terminal.supervisor = asyncio.get_running_loop().create_task(
            self._supervise(terminal, transport, protocol)
        )
        self._terminals[terminal_id] = terminal
        await self._forget_old()
        return terminal.describe()

    async def _supervise(
        self, terminal: RunningTerminal, transport: asyncio.SubprocessTransport, protocol: PtyExit
    ) -> None:
        try:
            await protocol.exited
        finally:
            # also when cancelled (agent stopping): nothing outlives its terminal
            await asyncio.shield(terminal.drain_and_close())
            code = transport.get_returncode()
            transport.close()
            terminal.info.status = TerminalStatus.EXITED
            terminal.info.exit_code = code
            terminal.info.finished_at = datetime.now(UTC)
            terminal.finished.set()
            terminal.notify()
            with contextlib.suppress(RuntimeError):  # log closed or unwritable: the terminal still ends
                self._events.append(TerminalExited(terminal_id=terminal.info.id, exit_code=code))

    async def delete(self, terminal_id: UUID) -> Terminal:
        """End it (if it runs), forget it and its output; answers how it ended."""
        terminal = self.get(terminal_id)
        await self._end(terminal)
        self._terminals.pop(terminal_id, None)
        await terminal.spill.close(remove=True)
        return terminal.describe()

    async def _end(self, terminal: RunningTerminal) -> None:
        if terminal.finished.is_set():
            return
        assert terminal.session is not None and terminal.supervisor is not None
        await terminal.session.hang_up()
        await terminal.session.terminate()
        await asyncio.wait({terminal.supervisor}, timeout=terminal.grace + 5.0)

    async def _forget_old(self) -> None:
        """Beyond ``max_terminals`` exited terminals, forget the oldest (and their files)."""
        exited = [t for t in self._terminals.values() if t.finished.is_set()]
        for terminal in exited[: max(0, len(exited) - self._settings.max_terminals)]:
            self._terminals.pop(terminal.info.id, None)
            await terminal.spill.close(remove=True)

    async def close(self) -> None:
        """End every terminal (their exits are recorded) and close their files."""
        self._closing = True
        terminals = list(self._terminals.values())
        await asyncio.gather(*(self._end(t) for t in terminals), return_exceptions=True)
        await asyncio.gather(*(t.spill.close() for t in terminals), return_exceptions=True)
