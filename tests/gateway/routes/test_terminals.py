"""Terminals and stdin through the gateway on the process runtime (a real agent process, real PTYs).
The same scenarios run on Docker in runtimes/test_docker_terminals.py."""

from __future__ import annotations

from gw_helpers import Harness
from terminal_scenarios import delete_ends_the_group, stdin_session, terminal_session


async def test_terminal_session(process_harness: Harness) -> None:
    await terminal_session(process_harness)


async def test_delete_ends_the_group(process_harness: Harness) -> None:
    await delete_ends_the_group(process_harness)


async def test_stdin(process_harness: Harness) -> None:
    await stdin_session(process_harness)
