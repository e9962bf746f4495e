"""Racing awaitables: the first to finish wins, the others are cancelled.

Used wherever two or three loops serve one connection (send and receive, a
stream and a disconnect watch, ...) and the first to end ends them all. The
gateway uses it too (it may import from the agent's package, never the reverse).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
async def race(
    first: Awaitable[A], second: Awaitable[B], /
) -> tuple[A | BaseException, B | BaseException]: ...


@overload
async def race(
    first: Awaitable[A], second: Awaitable[B], third: Awaitable[C], /
) -> tuple[A | BaseException, B | BaseException, C | BaseException]: ...


async def race(*awaitables: Awaitable[Any]) -> tuple[Any, ...]:
    """Run ``awaitables`` concurrently until the first one finishes, then cancel the
    others and wait until they have ended.

    Answers each one's outcome, in order, as :func:`asyncio.gather` with
    ``return_exceptions=True`` does: its result, or the exception it raised; a
    cancelled loser's outcome is a :class:`asyncio.CancelledError`. When the caller
    is cancelled, every awaitable is cancelled and waited for before the
    cancellation goes on.
    """
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return tuple(outcomes)


def finished(outcome: object) -> bool:
    """Whether an outcome of :func:`race` is one that ended on its own (not cancelled)."""
    return not isinstance(outcome, asyncio.CancelledError)
