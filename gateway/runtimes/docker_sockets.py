"""The host directories of the Docker runtime's network-less sandboxes, one per conversation.

A sandbox with neither internet nor an egress list runs with ``NetworkMode: none``: it
has a loopback interface and nothing else, so no route to the host, the internet or
another sandbox, and no relay. Its agent listens on a Unix socket (root's, mode 0666:
made before the agent drops to the sandbox user, see ``sandbox_agent.__main__``) in a
directory of the host bind-mounted at :data:`~gateway.runtimes.docker_config.SOCKET_DIR`
into that sandbox alone; the gateway connects to it there
(:func:`gateway.agent_transport.unix_url`).

Permissions (contract of :class:`SocketDirs`):
- the root (``docker_socket_dir``) and its installation's directory are the gateway
  user's, 0700: no other user of the host reaches any socket;
- a conversation's directory is made 0777 (the agent, root in its container but with no
  capability to override permissions, must create its socket there), and :meth:`seal`
  makes it 0755 once the agent answers: from then on nothing in the sandbox can add,
  replace or remove an entry (no symlink planted to lead the gateway elsewhere, no file
  filling the host's disk), while the gateway (its owner) still removes it;
- no other sandbox has it mounted, so none can reach that socket.

The token (default image only; a template's goes through the engine): :meth:`make` can put it
in the directory as ``token`` (:data:`~gateway.runtimes.docker_config.HANDED_TOKEN` inside),
a plain file write where writing it into the volume through the engine (a tar upload into
the created container) was the one step a cold start had beyond ``docker run`` (a median
163 ms of 3 s under load). The agent, as root and before anything else, keeps it in the
volume where the engine's copy used to be (root's, 0400: a restart and a restarted gateway
read it there as before) and removes it here; :meth:`seal` removes it too, before any task
can run. It is readable by all (0644): the sandbox's root need not be the gateway's user
(another uid, a user namespace), no host user reaches the directory (the installation's is
0700), and in the sandbox only the agent runs until it is gone.

Layout: ``<docker_socket_dir>/<install>/<conversation id>/agent.sock`` (kept short: a socket's
path has at most 107 bytes); a directory no container owns is an orphan (:meth:`orphans`).
Every file system call runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from uuid import UUID

from gateway.errors import SandboxStartError
from gateway.runtimes import docker_config as cfg
from sandbox_agent.fdio import write_all

#: A Unix socket path's limit (sun_path) on Linux, less its final NUL.
_SUN_PATH_MAX = 107
_SOCKET_NAME = Path(cfg.AGENT_SOCKET).name
_TOKEN_NAME = Path(cfg.HANDED_TOKEN).name


class SocketDirs:
    """The socket directories of one installation under ``root``."""

    def __init__(self, root: Path, install: str) -> None:
        self._root = root.expanduser().absolute()
        self._base = self._root / install

    def directory(self, names: cfg.Names) -> Path:
        return self._base / names.sandbox[-36:]  # the conversation id (see cfg.Names.of)

    def socket(self, names: cfg.Names) -> str:
        """The host path of the agent's socket (what the gateway connects to)."""
        return str(self.directory(names) / _SOCKET_NAME)

    async def make(self, names: cfg.Names, token: str | None = None) -> str:
        """Make the conversation's directory (writable for its agent until :meth:`seal`), with
        ``token`` handed over in it if given; its path. :class:`SandboxStartError` when the
        socket's path would be too long for the kernel."""
        if len(self.socket(names).encode()) > _SUN_PATH_MAX:
            raise SandboxStartError(
                f"docker_socket_dir {self._root} is too long: a socket's path may have {_SUN_PATH_MAX} bytes"
            )
        return str(await asyncio.to_thread(self._make, self.directory(names), token))

    def _make(self, directory: Path, token: str | None) -> Path:
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for private in (self._root, self._base):
            private.mkdir(mode=0o700, exist_ok=True)
            os.chmod(private, 0o700)  # whatever the umask, or an older mode, said
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o777)
        if token is not None:
            handed = directory / _TOKEN_NAME
            handed.unlink(missing_ok=True)
            fd = os.open(handed, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                write_all(fd, token.encode())
            finally:
                os.close(fd)
            os.chmod(handed, 0o644)  # whatever the umask said
        return directory

    async def handed_token(self, names: cfg.Names) -> str | None:
        """The token handed over in the directory and not yet kept by its agent (a first boot
        under way), or ``None``. Read before the volume's: the agent keeps it there before it
        removes it here, so one of the two always has it."""
        return await asyncio.to_thread(self._handed, self.directory(names) / _TOKEN_NAME)

    @staticmethod
    def _handed(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    async def seal(self, names: cfg.Names) -> None:
        """The agent's socket is there: nothing in the sandbox may change the directory any more,
        and no token handed over is left in it (its agent has it)."""
        await asyncio.to_thread(self._seal, self.directory(names))

    @staticmethod
    def _seal(directory: Path) -> None:
        os.chmod(directory, 0o755)
        (directory / _TOKEN_NAME).unlink(missing_ok=True)

    async def remove(self, names: cfg.Names) -> bool:
        """Remove the conversation's directory; ``False`` when there was none."""
        return await asyncio.to_thread(self._remove, self.directory(names))

    @staticmethod
    def _remove(directory: Path) -> bool:
        if not directory.exists():
            return False
        shutil.rmtree(directory, ignore_errors=True)
        return True

    async def forget(self) -> int:
        """Remove the installation's directory and all in it (an installation that is done: the
        doctor's); how many conversations' directories were still there."""
        return await asyncio.to_thread(self._forget)

    def _forget(self) -> int:
        try:
            left = len(os.listdir(self._base))
        except FileNotFoundError:
            return 0
        shutil.rmtree(self._base, ignore_errors=True)
        return left

    async def orphans(self, owned: set[UUID], age: float) -> list[UUID]:
        """Conversations of this installation with a directory, none in ``owned``, older than ``age`` s."""
        return await asyncio.to_thread(self._orphans, owned, age)

    def _orphans(self, owned: set[UUID], age: float) -> list[UUID]:
        found: list[UUID] = []
        try:
            entries = list(os.scandir(self._base))
        except FileNotFoundError:
            return []
        for entry in entries:
            try:
                conversation = UUID(entry.name)
                changed = entry.stat(follow_symlinks=False).st_mtime
            except (ValueError, OSError):
                continue
            if conversation in owned or time.time() - changed < age:
                continue
            found.append(conversation)
        return found
