"""``convoy shell`` under a real PTY (pexpect), and ``convoy exec -i`` with piped and file stdin,
as a user runs them: real subprocesses against a real gateway."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

import pexpect
from client_harness import TIMEOUT, cli_env
from gw_helpers import Harness

from gateway.client import AsyncConvoyClient

CONVOY = [sys.executable, "-c", "from gateway.cli import main; main()"]


def spawn(url: str, *args: str, rows: int = 30, cols: int = 100) -> pexpect.spawn:
    return pexpect.spawn(
        CONVOY[0], [*CONVOY[1:], *args], env=cli_env(url), dimensions=(rows, cols), timeout=TIMEOUT
    )


def expect_retyping(child: pexpect.spawn, line: str, pattern: str, attempts: int = 20) -> None:
    """Types ``line`` until ``pattern`` shows (a resize travels beside the keys, not in order)."""
    for _ in range(attempts):
        child.sendline(line)
        if child.expect([pattern, pexpect.TIMEOUT], timeout=3) == 0:
            return
    raise AssertionError(f"{pattern!r} never showed; last output: {child.before!r}")


def interactive_session(url: str, cid: str) -> None:
    child = spawn(url, "shell", cid, "--command", "sh")
    try:
        child.sendline("stty size; echo $((40 + 2))-ready")
        child.expect("30 100")
        child.expect("42-ready")
        child.setwinsize(40, 120)  # SIGWINCH to convoy, which resizes the remote PTY
        expect_retyping(child, "stty size", "40 120")
        child.sendline("sleep 300")
        child.sendcontrol("c")  # raw mode: Ctrl-C goes to the sandbox, not to convoy
        child.sendline("echo still-$((1 + 1))")
        child.expect("still-2")
        child.sendcontrol("d")  # at an empty prompt: the remote shell ends, and so does convoy
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def exit_code_and_restored_terminal(url: str, cid: str) -> None:
    command = shlex.join([*CONVOY, "shell", cid, "--command", "echo remote-hi; exit 3"])
    script = f"stty -g; {command}; echo code=$?; stty -g"
    child = pexpect.spawn("/bin/sh", ["-c", script], env=cli_env(url), timeout=TIMEOUT)
    try:
        child.expect(r"([0-9a-f:]+)\r\n")
        before = child.match.group(1)
        child.expect("remote-hi")
        child.expect(r"code=(\d+)\r\n")
        code = child.match.group(1)
        child.expect(r"([0-9a-f:]+)\r\n")
        after = child.match.group(1)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert code == b"3"
    assert after == before, "the local terminal's settings are restored"


async def test_convoy_shell_under_a_real_pty(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        await asyncio.to_thread(interactive_session, url, str(convo.id))
        await asyncio.to_thread(exit_code_and_restored_terminal, url, str(convo.id))
        left = [terminal async for terminal in convo.terminals()]
        assert left == [], "convoy shell deletes the terminal it started"


async def _exec_with_stdin(url: str, cid: str, stdin: int | None, data: bytes | None) -> tuple[int, bytes]:
    process = await asyncio.create_subprocess_exec(
        *CONVOY,
        "exec",
        "-i",
        cid,
        "--",
        "read a; echo got-$a; cat; echo end",
        env=cli_env(url),
        stdin=stdin if stdin is not None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        out, _ = await process.communicate(data)
    assert process.returncode is not None
    return process.returncode, out


async def test_exec_i_streams_stdin_and_its_end(harness: Harness, tmp_path: Path) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        piped = await _exec_with_stdin(url, str(convo.id), None, b"one\ntwo\nthree\n")
        assert piped == (0, b"got-one\ntwo\nthree\nend\n")
        (tmp_path / "input.txt").write_bytes(b"file\nlines\n")
        with (tmp_path / "input.txt").open("rb") as file:
            from_file = await _exec_with_stdin(url, str(convo.id), file.fileno(), None)
        assert from_file == (0, b"got-file\nlines\nend\n")
