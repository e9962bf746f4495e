"""The client and the CLI against the real gateway on the Docker runtime (one container per
conversation): the same promises as on the process runtime."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from client_harness import (
    TIMEOUT,
    cli_env,
    conversation_behind_proxy,
    make_tree,
    read_tree,
    run_cli,
    start_cli,
)
from gw_helpers import Harness, Serve, base_settings

from gateway.client import AsyncConvoyClient, TaskStatus
from tests.gateway.runtimes.dockertools import docker_runtime_of

pytestmark = pytest.mark.docker


@pytest.fixture
async def docker_harness(tmp_path: Path, serve: Serve) -> AsyncIterator[Harness]:
    settings = base_settings(tmp_path / "state", runtime="docker", start_timeout=120.0)
    async with docker_runtime_of(settings) as runtime:
        yield Harness(settings, runtime, serve)


async def test_exit_codes_and_complete_ordered_output(docker_harness: Harness) -> None:
    async with (
        docker_harness.serve() as url,
        AsyncConvoyClient(url) as client,
        await client.create() as convo,
    ):
        result = await convo.run("echo out; echo err >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        many = await convo.run(["seq", "1", "5000"], check=True)
        assert many.stdout.splitlines() == [str(n) for n in range(1, 5001)]
        cli = await run_cli("exec", str(convo.id), "--", "sh", "-c", "echo hi; exit 9", url=url)
        assert (cli.code, cli.stdout) == (9, "hi\n")


async def test_directory_round_trip_through_the_cli(docker_harness: Harness, tmp_path: Path) -> None:
    expected = make_tree(tmp_path / "src")
    async with (
        docker_harness.serve() as url,
        AsyncConvoyClient(url) as client,
        await client.create() as convo,
    ):
        up = await run_cli("upload", str(convo.id), str(tmp_path / "src"), ".", url=url)
        assert up.code == 0, up.stderr
        down = await run_cli("download", str(convo.id), "src", str(tmp_path / "back"), url=url)
        assert down.code == 0, down.stderr
    files, dirs = read_tree(tmp_path / "back")
    assert files == expected and "empty-dir/inner" in dirs


async def test_sigint_cancels_the_task_in_the_container(docker_harness: Harness) -> None:
    async with (
        docker_harness.serve() as url,
        AsyncConvoyClient(url) as client,
        await client.create() as convo,
    ):
        process = await start_cli(
            "exec", str(convo.id), "--", "echo started; exec sleep 300", env=cli_env(url)
        )
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), TIMEOUT) == b"started\n"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 130
        statuses = [task.status async for task in convo.tasks()]
        assert statuses == [TaskStatus.CANCELLED]
        # Nothing of it is left running in the container.
        ps = await convo.run("ps -eo args 2>/dev/null || cat /proc/[0-9]*/cmdline | tr '\\0' ' '", check=True)
        assert "sleep 300" not in ps.stdout


async def test_dropped_connections_lose_no_output(docker_harness: Harness) -> None:
    async with docker_harness.serve() as url, conversation_behind_proxy(url) as (proxy, convo):
        run = await convo.start_shell("seq 1 20000")
        cut = 0
        async for _ in run.output():
            if cut < 2:
                cut += proxy.cut() > 0
        result = await run.wait()
    assert cut >= 1
    assert result.stdout.splitlines() == [str(n) for n in range(1, 20001)]
