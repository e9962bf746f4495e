"""What a spare agent does before it answers ready: the first-use costs of a conversation's
first command, paid while nobody waits (see :meth:`sandbox_agent.agent.Agent.start`).

A spare is claimed and given its first command within milliseconds; on the first one, an
agent that never ran a task imports the modules its runner and its streamed answer need
(anyio's asyncio backend, which Starlette's streaming answers enter: tens of milliseconds
in a container, most of it reading and unmarshalling code). :func:`warm` does that first.

Contract: it records no event, reads or writes nothing of the workspace or the state
directory, starts no task and no process: the spare's event log still starts with its
conversation's READY, and nothing of it outlives the call but imported code. What it
imports every agent imports anyway at its first command, so a claimed spare costs no more
memory than any conversation that ran one.
"""

from __future__ import annotations

import asyncio
import logging

import anyio

from sandbox_agent.protocol import RUNNABLE_TYPES
from sandbox_agent.runnables import runner_for

log = logging.getLogger(__name__)


async def warm() -> None:
    """Import every runner, and enter and leave an anyio task group once (as a streamed
    answer does). Never raises for what it only warms: a failure here is the first
    command's to meet, as it would without the warming."""
    try:
        for model in RUNNABLE_TYPES:
            runner_for(str(model.model_fields["type"].default))
        async with anyio.create_task_group() as group:
            group.start_soon(asyncio.sleep, 0)
    except Exception:  # only a warming: the first command meets the same failure again
        log.exception("warming the spare's first command failed")
