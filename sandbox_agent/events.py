"""The conversation's event log: append-only, persisted, paged, followed.

Contract:
- :meth:`EventLog.append` gives the event the next ``seq`` (gapless from 1),
  stores its envelope as one JSON line in ``<state_dir>/events.jsonl`` (written
  in batches by :class:`~sandbox_agent.journal.Journal`) and wakes followers.
  It is synchronous: ordering is the order of calls on the event loop.
- While the file cannot be written (disk full), :meth:`EventLog.append` raises
  :class:`~sandbox_agent.journal.JournalUnwritable` and stores nothing: no seq
  is used, and events accepted before the failure stay readable (from memory)
  and reach the file once a retry succeeds (see the journal's contract).
- The log is reloaded on start; ``seq`` and history continue. A torn last line
  (crash mid-write) is dropped, so the log always reloads.
- In memory the log keeps only indexes (8-byte offset and 8-byte id key per
  event; per-type and per-task seq lists) plus a byte-bounded tail of recent
  envelopes, so paging is O(page) and followers read live events from memory.
- A :class:`~sandbox_agent.followers.Follower` reads from ``after_seq``
  onwards, history then live, in seq order: no gap, no duplicate, in batches
  of at most about :data:`~sandbox_agent.followers.FOLLOW_BATCH_BYTES` (at
  least one event), so what a follower holds is bounded in bytes. Once caught
  up, it may lag at most ``max_lag`` events and ``max_lag_bytes`` bytes behind
  the head; past either it is marked too slow (and its ``overflowed`` event
  set) and must be dropped by its owner, which never slows the writer or
  other followers.
"""

from __future__ import annotations

import asyncio
import json
import os
from bisect import bisect_right
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

from pydantic import BaseModel

from sandbox_agent.event_index import EventIndex, runs
from sandbox_agent.followers import Follower
from sandbox_agent.journal import Journal

JSONL_NAME = "events.jsonl"


class StoredEvent(NamedTuple):
    seq: int
    raw: bytes  # the envelope as JSON


class LogClosed(RuntimeError):
    """The log is shutting down; followers stop."""


class UnencodableEvent(ValueError):
    """A detail that cannot be written as UTF-8 JSON (a lone surrogate, say): refused, not stored."""


def _envelope(event_id: bytes, seq: int, conversation_id: bytes, detail_json: bytes) -> bytes:
    """The stored line of an event; ids as their canonical text, in ASCII."""
    created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return b'{"id":"%s","seq":%d,"conversation_id":"%s","created_at":"%s","detail":%s}' % (
        event_id,
        seq,
        conversation_id,
        created.encode(),
        detail_json,
    )


def new_event_id() -> tuple[bytes, int]:
    """A random (version 4) UUID as its canonical text in ASCII, and its top 64 bits (the
    index's key): what ``uuid4()`` gives, without making a :class:`UUID` and printing it
    on every event."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = raw.hex().encode()
    return b"%s-%s-%s-%s-%s" % (text[:8], text[8:12], text[12:16], text[16:20], text[20:]), int.from_bytes(
        raw[:8], "big"
    )


def ephemeral(conversation_id: UUID, detail: BaseModel) -> bytes:
    """An envelope with seq 0 that is not part of the log (an ``Error`` to one client)."""
    event_id, _ = new_event_id()
    return _envelope(event_id, 0, str(conversation_id).encode(), detail.model_dump_json().encode())


class EventLog:
    def __init__(
        self,
        state_dir: Path,
        *,
        tail_bytes: int = 8 * 1024 * 1024,
        max_lag: int = 10_000,
        max_lag_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._journal = Journal(state_dir / JSONL_NAME)
        self._tail_limit = tail_bytes
        self.max_lag = max_lag
        self.max_lag_bytes = max_lag_bytes
        self.conversation_id: UUID | None = None
        #: The conversation id and its text in the envelopes (made again if the id changes).
        self._conversation_text: tuple[UUID | None, bytes] = (None, b"")
        self._index = EventIndex()
        self._offsets = self._index.offsets
        # Recent envelopes: self._tail[self._tail_head] has seq self._tail_first. A list with a
        # moving head (compacted now and then) gives O(k) slices, unlike a deque's O(n) islice.
        self._tail: list[bytes] = []
        self._tail_head = 0
        self._tail_first = 1
        self._tail_size = 0
        self._changed = asyncio.Event()
        self._followers: set[Follower] = set()
        self._closed = False

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> int:
        """Reload the log from disk (blocking work in a thread); returns the events found."""
        count = await asyncio.to_thread(self._journal.load, self._index_line)
        self._tail_first = count + 1
        self._journal.start()
        return count

    def _index_line(self, offset: int, line: bytes) -> bool:
        try:
            envelope: Any = json.loads(line)
            seq = envelope["seq"]
            event_id = UUID(envelope["id"])
            detail = envelope["detail"]
            kind = detail["type"]
            conversation_id = UUID(envelope["conversation_id"])
        except (ValueError, KeyError, TypeError):
            return False
        if seq != len(self._offsets) + 1 or not isinstance(kind, str):
            return False
        if self.conversation_id is None:
            self.conversation_id = conversation_id
        task_id = detail.get("task_id")
        self._index.add(offset, event_id, kind, task_id if isinstance(task_id, str) else None)
        return True

    async def close(self) -> None:
        """Stop followers, write everything queued, fsync."""
        self._closed = True
        self._changed.set()
        await self._journal.close()

    async def flush(self) -> None:
        await self._journal.flush()

    def check_writable(self) -> None:
        """Raise :class:`~sandbox_agent.journal.JournalUnwritable` while appends are refused."""
        self._journal.check_writable()

    # --- writing --------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return len(self._offsets)

    def append(self, detail: BaseModel) -> StoredEvent:
        """Record ``detail`` (a protocol detail model) as the next event."""
        if self._closed:
            raise LogClosed("the event log is closed")
        if self.conversation_id is None:
            raise RuntimeError("conversation_id must be set before the first event")
        try:
            detail_json = detail.model_dump_json().encode()
        except ValueError as error:  # serialization error, UnicodeEncodeError
            raise UnencodableEvent(f"the event cannot be stored as UTF-8 JSON: {error}") from None
        seq = len(self._offsets) + 1
        event_id, key = new_event_id()
        if self._conversation_text[0] != self.conversation_id:
            self._conversation_text = (self.conversation_id, str(self.conversation_id).encode())
        raw = _envelope(event_id, seq, self._conversation_text[1], detail_json)
        offset = self._journal.append(raw)
        task_id = getattr(detail, "task_id", None)
        kind = getattr(detail, "type", "")
        self._index.add_key(offset, key, kind, str(task_id) if task_id is not None else None)
        self._tail.append(raw)
        self._tail_size += len(raw)
        self._evict()
        self._changed.set()
        if self._followers:
            self._check_lag(seq, offset + len(raw) + 1)
        return StoredEvent(seq, raw)

    def _evict(self) -> None:
        # Only flushed lines leave memory: readers never read unflushed bytes from disk.
        flushed = self._journal.flushed
        tail = self._tail
        while self._tail_head < len(tail) and self._tail_size > self._tail_limit:
            oldest = tail[self._tail_head]
            if self._offsets[self._tail_first - 1] + len(oldest) + 1 > flushed:
                break
            self._tail_size -= len(oldest)
            self._tail_head += 1
            self._tail_first += 1
        if self._tail_head > 1024 and self._tail_head * 2 > len(tail):
            del tail[: self._tail_head]
            self._tail_head = 0

    def _check_lag(self, head: int, head_end: int) -> None:
        """Marks too slow each caught-up follower more than ``max_lag`` events or
        ``max_lag_bytes`` bytes behind ``head`` (whose line ends at ``head_end``)."""
        offsets = self._offsets
        for follower in list(self._followers):
            behind = head - follower.next_seq + 1
            if not follower.caught_up or behind <= 0:
                continue
            if behind > self.max_lag or head_end - offsets[follower.next_seq - 1] > self.max_lag_bytes:
                follower.mark_too_slow()

    # --- reading --------------------------------------------------------------

    async def read(
        self, first: int, last: int, max_disk_bytes: int | None = None, max_bytes: int | None = None
    ) -> list[bytes]:
        """Envelopes of seqs ``first..last`` (inclusive, clamped to the log).

        With ``max_disk_bytes``, a read from disk stops after about that many bytes;
        with ``max_bytes``, the whole answer does (at least one event either way):
        the answer may then end before ``last``.
        """
        first = max(first, 1)
        last = min(last, self.last_seq)
        if first > last:
            return []
        if max_bytes is not None:
            last = self._last_within(first, last, max_bytes)
        from_disk: list[bytes] = []
        if first < self._tail_first:
            disk_last = min(last, self._tail_first - 1)
            start = self._offsets[first - 1]
            if max_disk_bytes is not None:
                # offsets[s] is where seq s ends (seq s + 1 starts)
                fits = bisect_right(self._offsets, start + max_disk_bytes, first) - 1
                if fits < disk_last:
                    disk_last = last = max(fits, first)
            end = self._offsets[disk_last] if disk_last < self.last_seq else self._journal.end
            data = await asyncio.to_thread(self._journal.read, start, end - start)
            from_disk = data.split(b"\n")[: disk_last - first + 1]
            first = disk_last + 1
        if first > last:
            return from_disk
        # The tail may have moved while we read from disk; whatever left it is flushed.
        if first < self._tail_first:
            return from_disk + await self.read(first, last)
        start = self._tail_head + first - self._tail_first
        return from_disk + self._tail[start : start + last - first + 1]

    def _last_within(self, first: int, last: int, max_bytes: int) -> int:
        """The last seq of ``first..last`` such that ``first..it`` take at most ``max_bytes``
        (``first`` itself whatever its size)."""
        offsets = self._offsets  # offsets[s] is where seq s ends (seq s + 1 starts)
        start = offsets[first - 1]
        fitting = bisect_right(offsets, start + max_bytes, first, last)  # seqs first..fitting-1 fit
        if fitting < last:
            return max(fitting - 1, first)
        end = offsets[last] if last < self.last_seq else self._journal.end
        return last if end - start <= max_bytes else max(last - 1, first)

    async def read_seqs(self, seqs: Iterable[int]) -> list[bytes]:
        """Envelopes of the given ascending seqs (runs are read in one go)."""
        result: list[bytes] = []
        for run in runs(seqs):
            result.extend(await self.read(run[0], run[-1]))
        return result

    async def get(self, event_id: UUID) -> bytes | None:
        needle = str(event_id).encode()
        for seq in self._index.candidates(event_id):
            raw = await self.read(seq, seq)
            if raw and needle in raw[0][:60]:
                return raw[0]
        return None

    def select(self, after_seq: int, limit: int, types: list[str] | None, task_id: UUID | None) -> list[int]:
        """Up to ``limit`` seqs after ``after_seq`` matching the filters, ascending (see EventIndex)."""
        return self._index.select(after_seq, limit, types, task_id)

    # --- following ------------------------------------------------------------

    def follow(self, after_seq: int) -> Follower:
        """A follower that yields events after ``after_seq`` (``-1``: from now on)."""
        start = self.last_seq + 1 if after_seq < 0 else after_seq + 1
        follower = Follower(self, start)
        self._followers.add(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        """Stop checking ``follower``'s lag (it is closed, or marked too slow)."""
        self._followers.discard(follower)

    async def wait_beyond(self, seq: int) -> None:
        """Return once ``seq`` is in the log; raise :class:`LogClosed` if the log closes first."""
        while self.last_seq < seq and not self._closed:
            self._changed.clear()
            await self._changed.wait()
        if self._closed and self.last_seq < seq:
            raise LogClosed("the event log is closed")
