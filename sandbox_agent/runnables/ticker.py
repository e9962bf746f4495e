"""Ticker: the seed's debug task - one ``Tick`` event every ``interval`` seconds."""

from __future__ import annotations

import asyncio

from sandbox_agent.protocol import Tick, Ticker
from sandbox_agent.runnables import Outcome, TaskContext

#: With interval 0, ticks are emitted in bursts of this many between yields to the
#: loop: followers then receive batches, and nothing waits more than a burst.
BURST = 64


async def run(runnable: Ticker, context: TaskContext) -> Outcome:
    interval = runnable.interval
    for iteration in range(1, runnable.iterations + 1):
        if context.thawed is not None:
            await context.thawed.wait()  # a frozen sandbox's Ticker makes no progress either
        context.emit(Tick(task_id=context.task_id, message=runnable.message, iteration=iteration))
        if iteration == runnable.iterations:
            break
        if interval > 0:
            await asyncio.sleep(interval)
        elif iteration % BURST == 0:
            await asyncio.sleep(0)
    return Outcome()
