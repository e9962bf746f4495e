"""The event log's in-memory indexes: where each event is, and which events match a filter.

Contract: per event, 8 bytes of file offset and 8 bytes of id key (the id's top
64 bits); per detail type and per task, an ascending array of seqs. So a page
of a filtered list costs O(page + log n) (plus the events of one task when
both filters are given), and finding an id is one C-speed scan of an array -
never a read of the history.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from uuid import UUID


class EventIndex:
    def __init__(self) -> None:
        self.offsets = array("Q")  # seq - 1 -> byte offset of the line
        self._id_keys = array("Q")  # seq - 1 -> top 64 bits of the event id
        self._by_type: dict[str, array[int]] = {}
        self._by_task: dict[str, array[int]] = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def add(self, offset: int, event_id: UUID, kind: str, task_id: str | None) -> int:
        """Index the next event; returns its seq."""
        return self.add_key(offset, event_id.int >> 64, kind, task_id)

    def add_key(self, offset: int, key: int, kind: str, task_id: str | None) -> int:
        """:meth:`add` given the id's key (its top 64 bits) rather than the id."""
        self.offsets.append(offset)
        self._id_keys.append(key)
        seq = len(self.offsets)
        _seqs(self._by_type, kind).append(seq)
        if task_id is not None:
            _seqs(self._by_task, task_id).append(seq)
        return seq

    def candidates(self, event_id: UUID) -> Iterator[int]:
        """Seqs whose id shares ``event_id``'s key (almost always at most one)."""
        key = event_id.int >> 64
        start = 0
        while True:
            try:
                index = self._id_keys.index(key, start)
            except ValueError:
                return
            yield index + 1
            start = index + 1

    def select(self, after_seq: int, limit: int, types: list[str] | None, task_id: UUID | None) -> list[int]:
        """Up to ``limit`` seqs after ``after_seq`` matching the filters, ascending."""
        after_seq = max(after_seq, 0)
        if task_id is None and not types:
            return list(range(after_seq + 1, min(after_seq + limit, len(self)) + 1))
        type_lists = [self._by_type.get(kind, array("Q")) for kind in dict.fromkeys(types or [])]
        if task_id is None:
            merged = heapq.merge(*(_from(seqs, after_seq) for seqs in type_lists))
            return list(itertools.islice(merged, limit))
        candidates = _from(self._by_task.get(str(task_id), array("Q")), after_seq)
        if types:
            candidates = (seq for seq in candidates if any(_contains(s, seq) for s in type_lists))
        return list(itertools.islice(candidates, limit))


def _seqs(lists: dict[str, array[int]], name: str) -> array[int]:
    """The seq list of ``name`` in ``lists``, made when first needed."""
    seqs = lists.get(name)
    if seqs is None:
        seqs = lists[name] = array("Q")
    return seqs


def runs(seqs: Iterable[int]) -> Iterator[list[int]]:
    """Ascending seqs grouped into runs of consecutive ones."""
    run: list[int] = []
    for seq in seqs:
        if run and seq != run[-1] + 1:
            yield run
            run = []
        run.append(seq)
    if run:
        yield run


def _from(seqs: array[int], after_seq: int) -> Iterator[int]:
    return itertools.islice(seqs, bisect_right(seqs, after_seq), None)


def _contains(seqs: array[int], seq: int) -> bool:
    index = bisect_right(seqs, seq) - 1
    return index >= 0 and seqs[index] == seq
