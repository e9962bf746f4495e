"""PTY terminals with byte-offset replay.

Contract:
- :meth:`TerminalManager.create` starts the command on a new PTY, in a new session
  whose controlling terminal it is (its own process group, like a task's), in the
  workspace root, with the task environment (no token) plus ``TERM=xterm-256color``,
  as the task user (see :mod:`sandbox_agent.privileges`). No command: the task user's
  login shell as a login shell (``argv[0]`` ``-sh``); ``/bin/sh`` when the user has
  none (``nologin``, ``false``, no passwd entry).
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
- When the leader exits, whatever it left in its group gets SIGHUP (the kernel's
  hangup), then SIGTERM and SIGKILL after ``kill_grace_seconds``; the output still
  in the PTY is read, then the terminal is EXITED and ``TerminalExited`` (with the
  exit code; negative: killed by that signal) goes into the event log. The output
  itself never does.
- :meth:`TerminalManager.delete` ends a running terminal's process group the same
  way (SIGHUP first: what an interactive shell obeys), then forgets it and its file.
  Exited terminals stay listed (replayable) until deleted; beyond ``max_terminals``
  exited ones, the oldest are forgotten. At most ``max_terminals`` run at once (429).
- Terminals do not survive the agent: stopping it ends them; starting it empties the
  terminals directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pwd
import shutil
import signal
import struct
import termios
from datetime import UTC, datetime
from uuid import UUID, uuid4

from sandbox_agent.errors import LimitReached, NotFound, Stopping, Unprocessable
from sandbox_agent.events import EventLog
from sandbox_agent.privileges import task_uid
from sandbox_agent.protocol import Terminal, TerminalCreate, TerminalExited, TerminalStatus
from sandbox_agent.runnables.process import ProcessGroup, child_env
from sandbox_agent.settings import AgentSettings
from sandbox_agent.spill import SpillFile

log = logging.getLogger(__name__)

#: Largest read from a PTY master (the kernel hands out at most about 4 KiB at a time anyway).
READ_BYTES = 64 * 1024
#: Shells that mean "this user may not log in": a terminal falls back to /bin/sh.
_NO_SHELL = ("nologin", "false")


def login_shell() -> str:
    """The task user's login shell, or ``/bin/sh``."""
    uid = task_uid()
    try:
        shell = pwd.getpwuid(os.geteuid() if uid is None else uid).pw_shell
    except KeyError:
        shell = ""
    if not shell or os.path.basename(shell) in _NO_SHELL or not os.access(shell, os.X_OK):
        return "/bin/sh"
    return shell


def _take_terminal() -> None:
    """In the child, after ``setsid``: make the PTY on fd 0 its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Exit(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class RunningTerminal:
    """One PTY, its process group, its output and its viewers' wake-up."""

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
        self.group: ProcessGroup | None = None
        self.supervisor: asyncio.Task[None] | None = None

    def describe(self) -> Terminal:
        return self.info.model_copy(update={"size": self.spill.size, "kept_from": self.spill.kept_from})

    # --- output -----------------------------------------------------------------

    def start_reading(self) -> None:
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, READ_BYTES)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave end is closed
            data = b""
        if not data:
            self._loop.remove_reader(self.master)
            self._eof.set()
            return
        self.spill.append(data)
        self.notify()
        if self.spill.backlogged:  # the file is not keeping up: let the PTY fill instead of memory
            self._loop.remove_reader(self.master)
            self._loop.create_task(self._resume_reading())

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

    def hang_up(self) -> None:
        if self.group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.group.pgid, signal.SIGHUP)

    async def drain_and_close(self) -> None:
        """After the leader exits: end the rest of the group, read what is left, close the master."""
        self.hang_up()
        if self.group is not None:
            await self.group.terminate()
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
        argv, executable = self._argv(request.command)
        terminal_id = uuid4()
        master, slave = os.openpty()
        try:
            os.set_blocking(master, False)
            set_size(master, request.cols, request.rows)
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.subprocess_exec(
                lambda: _Exit(loop),
                *argv,
                executable=executable,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self._settings.workspace,
                env=child_env({"TERM": "xterm-256color"}),
                start_new_session=True,
                preexec_fn=_take_terminal,
                user=task_uid(),
            )
        except OSError as error:
            os.close(master)
            raise Unprocessable(f"cannot start {argv[0]!r}: {error.strerror or error}") from None
        finally:
            os.close(slave)
        info = Terminal(
            id=terminal_id,
            command=argv,
            cols=request.cols,
            rows=request.rows,
            status=TerminalStatus.RUNNING,
            created_at=datetime.now(UTC),
        )
        path = self._settings.terminals_dir / f"{terminal_id}.out"
        spill = SpillFile(path, self._settings.terminal_keep_bytes)
        terminal = RunningTerminal(info, master, spill, self._settings.kill_grace_seconds)
        terminal.group = ProcessGroup(transport.get_pid(), self._settings.kill_grace_seconds)
        terminal.start_reading()
        terminal.supervisor = loop.create_task(self._supervise(terminal, transport, protocol))
        self._terminals[terminal_id] = terminal
        self._forget_old()
        return terminal.describe()

    def _argv(self, command: str | list[str] | None) -> tuple[list[str], str | None]:
        """The argv and the program (``None``: ``argv[0]``) for a request's ``command``."""
        if isinstance(command, list):
            return command, None
        if isinstance(command, str):
            return ["/bin/sh", "-c", command], None
        if self._shell is None:
            self._shell = login_shell()
        return [f"-{os.path.basename(self._shell)}"], self._shell

    async def _supervise(
        self, terminal: RunningTerminal, transport: asyncio.SubprocessTransport, protocol: _Exit
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
        terminal.hang_up()
        assert terminal.group is not None and terminal.supervisor is not None
        await terminal.group.terminate()
        await asyncio.wait({terminal.supervisor}, timeout=terminal.grace + 5.0)

    def _forget_old(self) -> None:
        exited = [t for t in self._terminals.values() if t.finished.is_set()]
        for terminal in exited[: max(0, len(exited) - self._settings.max_terminals)]:
            self._terminals.pop(terminal.info.id, None)
            asyncio.get_running_loop().create_task(terminal.spill.close(remove=True))

    async def close(self) -> None:
        """End every terminal (their exits are recorded) and close their files."""
        self._closing = True
        terminals = list(self._terminals.values())
        await asyncio.gather(*(self._end(t) for t in terminals), return_exceptions=True)
        await asyncio.gather(*(t.spill.close() for t in terminals), return_exceptions=True)
