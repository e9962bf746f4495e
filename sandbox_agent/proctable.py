"""The processes the agent can see, read from ``/proc`` (blocking: call in a worker thread
or where a short scan is acceptable).

:func:`processes` answers ``{pid: Proc}`` for every readable ``/proc/PID/stat``; a process
that ends during the scan is left out, and an unreadable ``/proc`` gives ``{}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    """What ``/proc/PID/stat`` says after the command name: state letter, parent, group, session."""

    state: str
    ppid: int
    pgrp: int
    sid: int

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def processes() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return table
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                # The command name may hold spaces and parentheses: split after its last ")".
                fields = file.read().rsplit(b")", 1)[1].split()
            table[pid] = Proc(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]))
        except (OSError, IndexError, ValueError):
            continue
    return table
