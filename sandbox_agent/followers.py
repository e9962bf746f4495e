"""One reader of the event log from a seq onwards: history, then live events, in batches.

A :class:`Follower` is made by :meth:`~sandbox_agent.events.EventLog.follow`; it
yields every event from its seq on, in seq order, no gap and no duplicate, in
batches of at most about :data:`FOLLOW_BATCH_BYTES` (at least one event). The
log marks it too slow when, caught up, it lags too far behind the head (see the
log's contract); its next read then raises :class:`FollowerTooSlow`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sandbox_agent.events import EventLog

#: A follower reads at most about this much per batch (from disk or memory).
FOLLOW_BATCH_BYTES = 1024 * 1024


class FollowerTooSlow(Exception):
    """This follower fell more than ``max_lag`` events behind the head."""


class Follower:
    """One reader of the log from a seq onwards; see :class:`~sandbox_agent.events.EventLog`."""

    def __init__(self, log: EventLog, next_seq: int) -> None:
        self._log = log
        self.next_seq = next_seq
        self.caught_up = next_seq > log.last_seq
        self.overflowed = asyncio.Event()

    def mark_too_slow(self) -> None:
        self.overflowed.set()
        self._log.unfollow(self)

    async def next_batch(self, max_events: int = 512) -> list[bytes]:
        """The next events (at least one); raises FollowerTooSlow or LogClosed."""
        if self.overflowed.is_set():
            raise FollowerTooSlow()
        await self._log.wait_beyond(self.next_seq)
        if self.overflowed.is_set():
            raise FollowerTooSlow()
        first, last = self.next_seq, self.next_seq + max_events - 1
        batch = await self._log.read(first, last, max_bytes=FOLLOW_BATCH_BYTES)
        self.next_seq += len(batch)
        if self.next_seq > self._log.last_seq:
            self.caught_up = True
        return batch

    def close(self) -> None:
        self._log.unfollow(self)
