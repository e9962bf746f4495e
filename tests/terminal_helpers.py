"""What a terminal viewer sees, for the agent's terminal tests and the gateway's terminal
scenarios alike: ``from tests.terminal_helpers import Screen``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

#: Seconds a viewer waits for what it expects to see.
WITHIN = 60.0
#: Typed into a shell: starts a job that ignores SIGTERM and SIGHUP (with job control, in a
#: process group of its own) and prints its pid as ``job=N-`` (the echo of the typed line
#: shows ``jo""b=``, so only the output matches :data:`JOB`).
START_JOB = b"(trap '' TERM HUP; exec sleep 300) & echo jo\"\"b=$!-\n"
JOB = re.compile(rb"job=(\d+)-")


class Screen:
    """What one viewer received: the bytes, and the control frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.data = b""
        self.controls: list[dict[str, Any]] = []

    async def until(self, done: Callable[[Screen], bool], within: float = WITHIN) -> Screen:
        async with asyncio.timeout(within):
            while not done(self):
                frame = await self.ws.recv()
                if isinstance(frame, bytes):
                    self.data += frame
                else:
                    self.controls.append(json.loads(frame))
        return self

    async def shows(self, pattern: bytes) -> Screen:
        """Until the output (after what was typed is echoed) matches the regex ``pattern``."""
        return await self.until(lambda screen: re.search(pattern, screen.data) is not None)

    async def job(self) -> int:
        """The pid a typed :data:`START_JOB` printed."""
        await self.until(lambda screen: JOB.search(screen.data) is not None)
        found = JOB.search(self.data)
        assert found is not None
        return int(found.group(1))

    async def to_the_end(self) -> Screen:
        """Everything until the server closes."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.until(lambda screen: False)
        return self
