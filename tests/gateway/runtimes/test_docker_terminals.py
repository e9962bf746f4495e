"""Terminals and stdin in a real hardened container (the scenarios of routes/test_terminals.py):
the PTY, the task user, the nologin fallback to /bin/sh, the process group."""

from __future__ import annotations

import pytest
from gw_helpers import Harness, create_ready
from terminal_scenarios import Conversation, delete_ends_the_group, stdin_session, terminal_session

from gateway.runtimes.docker_token import TOKEN_FILE
from tests.terminal_helpers import Screen

pytestmark = pytest.mark.docker


async def test_terminal_session(docker_harness: Harness) -> None:
    await terminal_session(docker_harness)


async def test_delete_ends_the_group(docker_harness: Harness) -> None:
    await delete_ends_the_group(docker_harness)


async def test_stdin(docker_harness: Harness) -> None:
    await stdin_session(docker_harness)


async def test_the_default_terminal_is_sh_as_the_sandbox_user_without_the_token(
    docker_harness: Harness,
) -> None:
    """The image's user has no login shell (nologin): /bin/sh, as that user, who cannot read the
    agent's token."""
    async with docker_harness.client() as client:
        conversation = Conversation(client, await create_ready(client))
        terminal = await conversation.terminal()
        assert terminal["command"] == ["-sh"]
        async with await conversation.attach(terminal["id"]) as ws:
            await ws.send(f"echo uid=$(id -u)=; cat {TOKEN_FILE} || echo no-tok''en\n".encode())
            screen = await Screen(ws).shows(rb"no-token\r\n")
        assert b"uid=10001=" in screen.data and b"Permission denied" in screen.data
