"""Blocking writes to file descriptors (call them in a thread from the event loop)."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer); an error
    (disk full, ...) is raised with whatever was written before it left in place."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
