"""``race``: the first awaitable to finish wins; the others are cancelled and waited for."""

from __future__ import annotations

import asyncio

import pytest

from sandbox_agent.race import finished, race


async def test_the_winner_answers_and_the_loser_is_cancelled_and_has_ended() -> None:
    cleaned_up = asyncio.Event()

    async def loser() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()  # ran before race returned
        return "never"

    async def winner() -> int:
        return 7

    won, lost = await race(winner(), loser())
    assert won == 7 and finished(won)
    assert isinstance(lost, asyncio.CancelledError) and not finished(lost)
    assert cleaned_up.is_set()


async def test_an_exception_is_an_outcome_not_raised() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failed, _, slept = await race(fails(), asyncio.sleep(3600), asyncio.Event().wait())
    assert isinstance(failed, ValueError) and finished(failed)
    assert not finished(slept)


async def test_cancelling_the_caller_cancels_every_runner() -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def runner(name: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    racing = asyncio.create_task(race(runner("a"), runner("b")))
    await started.wait()
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    assert sorted(ended) == ["a", "b"]
