"""PTY terminals with byte-offset replay.

Contract:
- :meth:`TerminalManager.create` starts the command on a new PTY, in a new session
  whose controlling terminal it is, in the workspace root, with the task environment
  (no token) plus ``TERM=xterm-256color``, as the task user (:mod:`sandbox_agent.ptys`).
  No command: the task user's login shell as a login shell; ``/bin/sh`` when the
  user has none (``nologin``, ``false``, no passwd entry).
- Each running terminal is a :class:`~sandbox_agent.running_terminal.RunningTerminal`:
  its PTY, output and viewers (reading and writing never block the event loop).
- Every output byte has an offset (0 = the first). The output is kept in
  ``<state_dir>/terminals/<id>.out``; retention: at least the last
  ``terminal_keep_bytes`` (default 4 MiB), at most twice that on disk. A viewer
  asking for an older offset is sent ``{"type": "skipped", "requested", "offset"}``
  and the bytes from the oldest kept one: it is told, never silently short.
- Viewers (:meth:`~sandbox_agent.running_terminal.RunningTerminal.next_chunk`) each
  read from their own offset: the bytes they get are exactly the terminal's output
  from there, with no gap and no duplicate. A terminal lives on with no viewer at all.
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
import os
import shutil
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sandbox_agent.errors import LimitReached, NotFound, Stopping, Unprocessable
from sandbox_agent.events import EventLog
from sandbox_agent.protocol import Terminal, TerminalCreate, TerminalExited, TerminalStatus
from sandbox_agent.ptys import PtyExit, command_argv, login_shell, spawn
from sandbox_agent.running_terminal import RunningTerminal
from sandbox_agent.sessions import Session
from sandbox_agent.settings import AgentSettings
from sandbox_agent.spill import SpillFile


async def _abandon(master: int, transport: asyncio.SubprocessTransport, grace: float) -> None:
    """A terminal whose output cannot be kept is not left running: end its session."""
    os.close(master)
    session = Session(transport.get_pid(), grace)
    await session.hang_up()
    await session.terminate()
    transport.close()


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
