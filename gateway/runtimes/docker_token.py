"""How a sandbox gets its agent token, and how a gateway reads it back. No aiodocker here.

The token is in no environment (a task could read ``/proc/1/environ``, anyone
with the engine ``docker inspect``). It is kept in the volume (``/data/agent/token``,
owned by root, mode 0400, in a root-only directory), and a restarted gateway reads it
back from there. The runtime writes it there after creating the sandbox and before
starting it (:func:`token_archive`), except in a default-image sandbox with no network:
that one is handed it in its socket directory and its agent keeps it there itself
(:mod:`gateway.runtimes.docker_sockets`).

The sandbox starts as root holding only CAP_SETUID and CAP_SETGID (Docker
20.10 gives added capabilities to root alone: a non-root user gets them in its
bounding set only); the agent reads the file, then works as ``docker_user``
and runs every task as that user with no capability left, unable to read the
file or to signal, trace or read the agent (see :mod:`sandbox_agent.privileges`).
"""

from __future__ import annotations

import io
import tarfile

DATA_DIR = "/data"
TOKEN_FILE = f"{DATA_DIR}/agent/token"
#: A claimed spare's claim (sandbox_agent.claim), written by its agent as root beside the token
#: (a spare's token file holds its claim secret); read back like the token after a restart.
CLAIM_FILE = f"{DATA_DIR}/agent/claim.json"
#: All the agent needs to read its token as root, then switch to the sandbox user.
AGENT_CAPABILITIES = ["CAP_SETGID", "CAP_SETUID"]


def token_archive(token: str, owner: str | None = None) -> bytes:
    """A tar of ``agent/`` (root, 0700) and ``agent/token`` (root, 0400), to unpack in :data:`DATA_DIR`.

    With ``owner`` (``UID:GID``, the sandbox user) also ``workspace/`` (0755) and ``state/``
    (0750), theirs: the volume of an image with no ``/data`` of its own (a template) starts
    empty, and the default image's already has them so."""
    data = token.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if owner is not None:
            uid, _, gid = owner.partition(":")
            for name, mode in (("workspace", 0o755), ("state", 0o750)):
                folder = tarfile.TarInfo(name)
                folder.type, folder.mode = tarfile.DIRTYPE, mode
                folder.uid, folder.gid = int(uid), int(gid or uid)
                tar.addfile(folder)
        folder = tarfile.TarInfo("agent")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(folder)
        file = tarfile.TarInfo("agent/token")
        file.size, file.mode = len(data), 0o400
        tar.addfile(file, io.BytesIO(data))
    return buffer.getvalue()
