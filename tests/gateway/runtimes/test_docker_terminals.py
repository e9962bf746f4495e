"""Terminals and stdin in a real hardened container (the scenarios of routes/test_terminals.py):
the PTY, the task user, the nologin fallback to /bin/sh, the process group."""

from __future__ import annotations

import pytest
from gw_helpers import Harness
from terminal_scenarios import delete_ends_the_group, stdin_session, terminal_session

pytestmark = pytest.mark.docker


async def test_terminal_session(docker_harness: Harness) -> None:
    await terminal_session(docker_harness)


async def test_delete_ends_the_group(docker_harness: Harness) -> None:
    await delete_ends_the_group(docker_harness)


async def test_stdin(docker_harness: Harness) -> None:
    await stdin_session(docker_harness)
