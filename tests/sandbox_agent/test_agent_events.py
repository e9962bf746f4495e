"""The event log: persistence, reload, torn lines, paging, followers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from agent_helpers import append_bytes

from sandbox_agent.events import JSONL_NAME, EventLog, LogClosed
from sandbox_agent.followers import FOLLOW_BATCH_BYTES, FollowerTooSlow
from sandbox_agent.protocol import ClientEvent, Tick

CID = UUID("12345678-1234-5678-1234-567812345678")


async def open_log(state: Path, **kwargs: Any) -> EventLog:
    log = EventLog(state, **kwargs)
    await log.open()
    if log.conversation_id is None:
        log.conversation_id = CID
    return log


def parse(raw: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


async def test_append_assigns_gapless_seqs_and_reload_continues(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    for n in range(5):
        stored = log.append(ClientEvent(type="Note", n=n))  # type: ignore[call-arg]
        assert stored.seq == n + 1
    await log.close()

    again = await open_log(tmp_path)
    assert again.last_seq == 5
    assert again.conversation_id == CID
    stored = again.append(ClientEvent(type="Note"))
    assert stored.seq == 6
    events = [parse(raw) for raw in await again.read(1, 6)]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["detail"].get("n") for e in events[:5]] == [0, 1, 2, 3, 4]
    await again.close()


@pytest.mark.parametrize("tail", [b'{"id": "torn', b"\x00\x00garbage", b'{"seq": 99}\n'])
async def test_a_torn_or_bad_last_line_is_dropped_on_reload(tmp_path: Path, tail: bytes) -> None:
    log = await open_log(tmp_path)
    for _ in range(3):
        log.append(ClientEvent(type="Note"))
    await log.close()
    path = tmp_path / JSONL_NAME
    good_size = path.stat().st_size
    append_bytes(path, tail)

    again = await open_log(tmp_path)
    assert again.last_seq == 3
    assert path.stat().st_size == good_size
    assert again.append(ClientEvent(type="Note")).seq == 4
    await again.close()
    final = await open_log(tmp_path)
    assert [parse(raw)["seq"] for raw in await final.read(1, 10)] == [1, 2, 3, 4]
    await final.close()


async def test_paging_filters_match_a_full_scan(tmp_path: Path) -> None:
    log = await open_log(tmp_path, tail_bytes=2000)  # most reads come from disk
    tasks = [uuid4(), uuid4()]
    for n in range(300):
        if n % 3 == 0:
            log.append(Tick(task_id=tasks[n % 2], message="m", iteration=n))
        else:
            log.append(ClientEvent(type=f"K{n % 4}"))
    await log.flush()
    everything = [parse(raw) for raw in await log.read(1, log.last_seq)]

    def expected(after: int, types: list[str] | None, task: UUID | None) -> list[int]:
        return [
            e["seq"]
            for e in everything
            if e["seq"] > after
            and (types is None or e["detail"]["type"] in types)
            and (task is None or e["detail"].get("task_id") == str(task))
        ]

    for types in (None, ["Tick"], ["K1", "K3"], ["Tick", "K2", "Missing"]):
        for task in (None, tasks[0]):
            for after in (0, 7, 150, 299):
                got = log.select(after, 40, types, task)
                assert got == expected(after, types, task)[:40]
                raws = await log.read_seqs(got)
                assert [parse(raw)["seq"] for raw in raws] == got
    await log.close()


async def test_get_by_id(tmp_path: Path) -> None:
    log = await open_log(tmp_path, tail_bytes=0)
    stored = [log.append(ClientEvent(type="Note")) for _ in range(50)]
    await log.flush()
    wanted = parse(stored[17].raw)
    raw = await log.get(UUID(wanted["id"]))
    assert raw is not None and parse(raw) == wanted
    assert await log.get(uuid4()) is None
    await log.close()


async def test_follower_replays_then_follows_without_gap_or_duplicate(tmp_path: Path) -> None:
    log = await open_log(tmp_path, tail_bytes=500)
    for _ in range(100):
        log.append(ClientEvent(type="Before"))
    follower = log.follow(10)

    async def produce() -> None:
        for n in range(400):
            log.append(ClientEvent(type="During"))
            if n % 7 == 0:
                await asyncio.sleep(0)

    producer = asyncio.create_task(produce())
    received: list[int] = []
    while len(received) < 490:
        batch = await asyncio.wait_for(follower.next_batch(), 30)
        received.extend(parse(raw)["seq"] for raw in batch)
    await producer
    assert received == list(range(11, 501))
    follower.close()
    await log.close()


async def test_live_only_follower_starts_at_the_head(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    log.append(ClientEvent(type="Old"))
    follower = log.follow(-1)
    log.append(ClientEvent(type="New"))
    batch = await asyncio.wait_for(follower.next_batch(), 30)
    assert [parse(raw)["detail"]["type"] for raw in batch] == ["New"]
    await log.close()


async def test_a_lagging_follower_is_marked_too_slow_others_are_not(tmp_path: Path) -> None:
    log = await open_log(tmp_path, max_lag=20)
    slow = log.follow(-1)
    fast = log.follow(-1)
    got: list[int] = []
    for _ in range(50):
        log.append(ClientEvent(type="Burst"))
        got.extend(parse(raw)["seq"] for raw in await fast.next_batch())
    assert slow.overflowed.is_set()
    assert not fast.overflowed.is_set()
    assert got == list(range(1, 51))
    with pytest.raises(FollowerTooSlow):
        await slow.next_batch()
    await log.close()


async def test_closing_the_log_stops_waiting_followers(tmp_path: Path) -> None:
    log = await open_log(tmp_path)
    follower = log.follow(-1)
    waiting = asyncio.create_task(follower.next_batch())
    await asyncio.sleep(0)
    await log.close()
    with pytest.raises(LogClosed):
        await asyncio.wait_for(waiting, 30)


async def test_bounded_disk_reads_still_return_every_event_in_order(tmp_path: Path) -> None:
    log = await open_log(tmp_path, tail_bytes=0)
    for n in range(40):
        log.append(ClientEvent(type="Blob", data="x" * (n * 100)))  # type: ignore[call-arg]
    await log.flush()
    got: list[int] = []
    while len(got) < 40:
        batch = await log.read(len(got) + 1, 40, max_disk_bytes=1500)
        assert batch
        got.extend(parse(raw)["seq"] for raw in batch)
    assert got == list(range(1, 41))
    assert len(await log.read(1, 40)) == 40
    await log.close()


async def test_a_follower_lagging_by_bytes_is_marked_too_slow(tmp_path: Path) -> None:
    log = await open_log(tmp_path, max_lag=10_000, max_lag_bytes=200_000)
    slow = log.follow(-1)
    fast = log.follow(-1)
    for _ in range(30):  # 30 events, far from max_lag, but 300 kB
        log.append(ClientEvent(type="Blob", data="x" * 10_000))  # type: ignore[call-arg]
        await fast.next_batch()
    assert slow.overflowed.is_set()
    assert not fast.overflowed.is_set()
    with pytest.raises(FollowerTooSlow):
        await slow.next_batch()
    await log.close()


@pytest.mark.parametrize("tail_bytes", [0, 64 * 1024 * 1024])  # history from disk; from memory
async def test_follower_batches_are_bounded_in_bytes(tmp_path: Path, tail_bytes: int) -> None:
    log = await open_log(tmp_path, tail_bytes=tail_bytes)
    size = FOLLOW_BATCH_BYTES // 10
    for _ in range(100):  # ten batches' worth
        log.append(ClientEvent(type="Blob", data="x" * size))  # type: ignore[call-arg]
    await log.flush()
    follower = log.follow(0)
    got: list[int] = []
    while len(got) < 100:
        batch = await asyncio.wait_for(follower.next_batch(), 30)
        assert sum(map(len, batch)) <= FOLLOW_BATCH_BYTES, f"{len(batch)} events in one batch"
        got.extend(parse(raw)["seq"] for raw in batch)
    assert got == list(range(1, 101))
    huge = log.append(ClientEvent(type="Blob", data="x" * (FOLLOW_BATCH_BYTES * 2)))  # type: ignore[call-arg]
    assert await asyncio.wait_for(follower.next_batch(), 30) == [huge.raw], "one event, whatever its size"
    follower.close()
    await log.close()
