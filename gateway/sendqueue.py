"""Frames on their way to one WebSocket client, bounded in bytes.

Every path that relays frames to a client (the follow relay, the firehose)
reads its source into a :class:`SendQueue` and writes to the client from it,
so what a client that stops reading costs the gateway is this bound (plus the
transport's 64 KiB and the one frame being written), whatever the size of the
frames.

Contract:
- At most ``max_bytes`` (and ``max_frames``) are held, except that an empty
  queue takes any one frame, so a frame larger than the bound still goes
  through to a client that keeps up.
- Two ways in: :meth:`offer` never waits and refuses a frame that does not
  fit (a source shared by many clients, the firehose, cannot wait for one);
  :meth:`put` waits for room (backpressure on the source) but gives up when
  the client has taken nothing for ``stall_timeout`` seconds. A refusal either
  way makes the queue *overflowed*: it drops what it holds and refuses
  everything after, so what the client received is a gapless prefix of the
  stream (it resumes with ``after_seq`` = the last ``seq`` it got). The owner
  closes the client with ``WS_CLOSE_TOO_SLOW``.
- :meth:`finish` marks the end of the stream (always taken); :meth:`get`
  returns ``None`` once everything before it was taken.
- Sizes are the frames' sizes in memory (``sys.getsizeof``).
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque

Frame = str | bytes


class SendQueue:
    def __init__(self, max_bytes: int, max_frames: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_frames = max_frames
        self._frames: deque[Frame | None] = deque()
        self._bytes = 0
        self._more = asyncio.Event()
        self._taken = asyncio.Event()
        self.overflowed = False
        #: The most bytes held at once (what this client cost at worst).
        self.peak_bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames)

    def _fits(self, size: int) -> bool:
        if not self._frames:
            return True
        if self.max_frames is not None and len(self._frames) >= self.max_frames:
            return False
        return self._bytes + size <= self.max_bytes

    def offer(self, frame: Frame) -> bool:
        """Queue ``frame`` now; ``False`` (and overflowed) when it does not fit."""
        size = sys.getsizeof(frame)
        if self.overflowed or not self._fits(size):
            self._overflow()
            return False
        self._append(frame, size)
        return True

    async def put(self, frame: Frame, stall_timeout: float) -> bool:
        """Queue ``frame``, waiting for room; ``False`` (and overflowed) when the client
        took nothing for ``stall_timeout`` seconds meanwhile."""
        size = sys.getsizeof(frame)
        while not self.overflowed and not self._fits(size):
            self._taken.clear()
            try:
                async with asyncio.timeout(stall_timeout):
                    await self._taken.wait()
            except TimeoutError:
                self._overflow()
        if self.overflowed:
            return False
        self._append(frame, size)
        return True

    def finish(self) -> None:
        """The stream ended: :meth:`get` answers ``None`` after the frames queued so far."""
        self._frames.append(None)
        self._more.set()

    async def get(self) -> Frame | None:
        """The next frame, waiting for one; ``None`` at the end of the stream."""
        while not self._frames:
            self._more.clear()
            await self._more.wait()
        frame = self._frames.popleft()
        if frame is not None:
            self._bytes -= sys.getsizeof(frame)
        self._taken.set()
        return frame

    def _append(self, frame: Frame, size: int) -> None:
        self._frames.append(frame)
        self._bytes += size
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        self._more.set()

    def _overflow(self) -> None:
        self.overflowed = True
        self._frames.clear()  # freed now, not when the client finally goes
        self._bytes = 0
