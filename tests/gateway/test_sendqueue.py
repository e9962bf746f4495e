"""SendQueue: bounded in bytes and frames, a gapless prefix once overflowed, backpressure
until the client stalls."""

from __future__ import annotations

import asyncio
import sys

from gateway.sendqueue import SendQueue


async def test_offer_refuses_past_the_bytes_and_drops_everything_after() -> None:
    frame = "x" * 1000
    queue = SendQueue(max_bytes=sys.getsizeof(frame) * 3)
    assert [queue.offer(frame) for _ in range(4)] == [True, True, True, False]
    assert queue.overflowed and queue.bytes == 0 and len(queue) == 0, "what it held is freed"
    assert not queue.offer("y"), "nothing after a refusal: the client got a gapless prefix"


async def test_offer_is_bounded_in_frames_too_and_an_empty_queue_takes_any_frame() -> None:
    queue = SendQueue(max_bytes=10, max_frames=2)
    assert queue.offer("x" * 1_000_000), "larger than the bound, but the queue was empty"
    assert await queue.get() == "x" * 1_000_000
    small = SendQueue(max_bytes=1 << 20, max_frames=2)
    assert [small.offer("a"), small.offer("b"), small.offer("c")] == [True, True, False]


async def test_put_waits_for_room_and_gives_up_when_nothing_is_taken() -> None:
    frame = "x" * 1000
    queue = SendQueue(max_bytes=sys.getsizeof(frame) * 2)
    assert await queue.put(frame, 1.0) and await queue.put(frame, 1.0)
    waiting = asyncio.create_task(queue.put("third", 30.0))
    await asyncio.sleep(0.05)
    assert not waiting.done(), "full: the source waits"
    assert await queue.get() == frame
    assert await asyncio.wait_for(waiting, 30) is True, "a frame taken makes room"

    assert not await queue.put(frame, 0.01), "nothing taken within the stall timeout"
    assert queue.overflowed and len(queue) == 0


async def test_finish_ends_the_stream_after_what_is_queued() -> None:
    queue = SendQueue(max_bytes=1 << 20)
    queue.offer("a")
    queue.finish()
    assert [await queue.get(), await queue.get()] == ["a", None]
