"""Who the agent is, and who its tasks are: the token stays out of the tasks' reach.

In a Docker sandbox the agent starts as root of the container holding two
capabilities only (CAP_SETUID, CAP_SETGID; every other one dropped,
no-new-privileges, read-only root). Before it serves, it reads its token from a
file only root can read (:func:`read_token`), then :func:`drop_to` switches it:
the real and saved uid stay 0, the effective uid and every gid become the
sandbox user, supplementary groups are cleared. Everything the agent does to
files it does as that user, as before; the kernel empties its effective
capabilities (effective uid 0 -> non-zero) and marks it non-dumpable.

A task is started with all three uids set to the sandbox user (:func:`task_uid`),
which needs no capability since it is the agent's effective uid already. A task
so holds no capability at all, and since its uids differ from the agent's real
and saved uid it cannot signal, ptrace or read the ``/proc`` files (``environ``,
``mem``) of the agent, nor read the token file.

Where the agent is not started as root (the process runtime, a plain
``docker run --user``), nothing changes: tasks run as the agent's own user.
"""

from __future__ import annotations

import os
from pathlib import Path

from sandbox_agent.fdio import write_all


def parse_user(text: str) -> tuple[int, int]:
    """``UID[:GID]`` (numeric, non-root) as ``(uid, gid)``; the gid defaults to the uid."""
    uid_text, _, gid_text = text.partition(":")
    try:
        uid, gid = int(uid_text), int(gid_text or uid_text)
    except ValueError:
        raise ValueError(f"run_as {text!r} is not a numeric UID[:GID]") from None
    if uid <= 0 or gid <= 0:
        raise ValueError(f"run_as {text!r}: tasks never run as root")
    return uid, gid


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped); ``ValueError`` when empty."""
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


def keep_handed_token(handed: Path, kept: Path) -> None:
    """A token handed over in ``handed`` (a runtime's, for a first start: see
    ``gateway.runtimes.docker_sockets``) kept in ``kept`` as the runtime would have put it
    there (mode 0400 in a 0700 directory, this user's: root's before the switch), then
    ``handed`` removed. Nothing when ``handed`` is not there (a later start: ``kept`` holds it).
    Written aside and renamed: ``kept`` is whole or absent, never half-written."""
    try:
        token = read_token(handed)
    except FileNotFoundError:
        return
    kept.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(kept.parent, 0o700)  # whatever the umask said
    aside = kept.with_name(f"{kept.name}.new")
    aside.unlink(missing_ok=True)  # left by a start that died here (0400: not opened for writing)
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        write_all(fd, token.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(aside, kept)
    handed.unlink(missing_ok=True)


def drop_to(uid: int, gid: int) -> None:
    """Work as ``uid``/``gid`` from now on (see the module docstring).

    A no-op when this process already is ``uid`` and was not started as root;
    ``PermissionError`` when it is another user that cannot switch.
    """
    if os.geteuid() == uid and os.getuid() != 0:
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(-1, uid, -1)  # real and saved stay root: no task can signal or trace the agent


def task_uid() -> int | None:
    """The uid a task must run as (all three uids), or ``None`` for the agent's own."""
    real, effective, _ = os.getresuid()
    return effective if real != effective else None
