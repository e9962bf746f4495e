"""The ``convoy`` command line as a user runs it: a real subprocess against a real gateway
(process runtime). Output is piped, so the CLI prints plain text (no progress bars)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
from client_harness import TIMEOUT, cli_env, make_tree, read_tree, run_cli, start_cli
from gw_helpers import USER_KEYS, Harness, keyed

from gateway.client import AsyncConvoyClient, TaskStatus
from tests.helpers import eventually, free_port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_one_line_error(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("convoy: ") and "Traceback" not in stderr


async def test_create_info_ls_rm(harness: Harness) -> None:
    async with harness.serve() as url:
        created = await run_cli("create", "--title", "from the cli", url=url)
        assert created.code == 0, created.stderr
        cid = str(uuid.UUID(created.stdout.strip()))
        info = await run_cli("info", cid, url=url)
        assert info.code == 0 and "from the cli" in info.stdout and "READY" in info.stdout
        as_json = await run_cli("--json", "info", cid, url=url)
        assert json.loads(as_json.stdout)["id"] == cid
        listed = await run_cli("ls", url=url)
        assert listed.code == 0 and cid in listed.stdout.split()
        removed = await run_cli("rm", cid, url=url)
        assert removed.code == 0 and removed.stdout.strip() == cid
        gone = await run_cli("info", cid, url=url)
        assert gone.code != 0
        assert_one_line_error(gone.stderr)


async def test_json_works_after_the_command_as_before_it(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "note.txt").write_text("hi\n")
    async with harness.serve() as url:
        created = await run_cli("create", "--title", "as json", "--json", url=url)
        assert created.code == 0, created.stderr
        cid = json.loads(created.stdout)["id"]
        after, before, listed, uploaded = await asyncio.gather(
            run_cli("info", cid, "--json", url=url),
            run_cli("--json", "info", cid, url=url),
            run_cli("ls", "--json", url=url),
            run_cli("upload", cid, str(tmp_path / "note.txt"), ".", "--json", url=url),
        )
        assert json.loads(after.stdout) == json.loads(before.stdout)
        assert json.loads(after.stdout)["title"] == "as json"
        assert [item["id"] for item in json.loads(listed.stdout)] == [cid]
        assert [item["path"] for item in json.loads(uploaded.stdout)] == ["note.txt"]
        found, downloaded, events, executed = await asyncio.gather(
            run_cli("files", cid, "--json", url=url),
            run_cli("download", cid, "note.txt", str(tmp_path / "back.txt"), "--json", url=url),
            run_cli("events", cid, "--json", url=url),
            run_cli("exec", cid, "--json", "--", "echo", "--json", url=url),
        )
        assert [item["path"] for item in json.loads(found.stdout)] == ["note.txt"]
        assert json.loads(downloaded.stdout) == [str(tmp_path / "back.txt")]
        assert json.loads(events.stdout.splitlines()[0])["seq"] == 1
        assert (executed.code, executed.stdout) == (0, "--json\n"), "after --, --json is the command's"
        removed = await run_cli("rm", cid, "--json", url=url)
        assert (removed.code, json.loads(removed.stdout)) == (0, [cid])


async def test_exec_streams_both_streams_and_propagates_the_exit_code(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        cid = str(convo.id)
        result = await run_cli("exec", cid, "--", "sh", "-c", "echo out; echo err >&2; exit 7", url=url)
        assert (result.code, result.stdout, result.stderr) == (7, "out\n", "err\n")
        many = await run_cli("exec", cid, "--", "seq", "1", "5000", url=url)
        assert many.code == 0 and many.stdout.splitlines() == [str(n) for n in range(1, 5001)]
        env = await run_cli("exec", cid, "-e", "X=1 2", "--", "sh", "-c", 'printf %s "$X"', url=url)
        assert env.stdout == "1 2"
        line = await run_cli("exec", cid, "--", "echo a | tr a b", url=url)  # one argument: a shell line
        assert (line.code, line.stdout) == (0, "b\n")


async def test_run_creates_runs_and_deletes(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "input.txt").write_text("three\nlines\nhere\n")
    async with harness.serve() as url, AsyncConvoyClient(url) as client:
        result = await run_cli(
            "run",
            "--upload",
            str(tmp_path / "input.txt"),
            "--",
            "sh",
            "-c",
            "wc -l < input.txt; exit 5",
            url=url,
        )
        assert result.code == 5, result.stderr
        assert result.stdout.strip() == "3"
        assert await client.count() == 0


async def test_sigint_cancels_the_remote_task(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        process = await start_cli(
            "exec", str(convo.id), "--", "sh", "-c", "echo $$; exec sleep 300", env=cli_env(url)
        )
        assert process.stdout is not None
        pid = int(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
        assert alive(pid)
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
        assert code == 130
        tasks = [task async for task in convo.tasks()]
        assert [task.status for task in tasks] == [TaskStatus.CANCELLED]

        async def gone() -> bool:
            return not alive(pid)

        await eventually(gone)


async def test_directory_round_trips_byte_for_byte(harness: Harness, tmp_path: Path) -> None:
    source = tmp_path / "project"
    expected = make_tree(source)
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        cid = str(convo.id)
        up = await run_cli("upload", cid, str(source), "inbox", url=url)
        assert up.code == 0, up.stderr
        assert len(up.stdout.splitlines()) == len(expected)
        listed = await run_cli("files", cid, "*.bin", url=url)
        assert {"inbox/project/empty.bin", "inbox/project/a/random.bin"} <= set(listed.stdout.split())
        down = await run_cli("download", cid, "inbox/project", str(tmp_path / "back"), url=url)
        assert down.code == 0, down.stderr
    files, dirs = read_tree(tmp_path / "back")
    assert files == expected
    assert "empty-dir/inner" in dirs


async def test_events_prints_history_as_lines_or_json(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        await convo.run("echo hi", check=True)
        plain = await run_cli("events", str(convo.id), url=url)
        assert plain.code == 0
        first = plain.stdout.splitlines()[0].split("\t")
        assert first[:2] == ["1", "ConversationStatusUpdate"]
        as_json = await run_cli("--json", "events", str(convo.id), "--after-seq", "1", url=url)
        seqs = [json.loads(line)["seq"] for line in as_json.stdout.splitlines()]
        assert seqs == list(range(2, len(seqs) + 2)) and len(seqs) >= 3


async def test_errors_are_one_line_without_traceback(harness: Harness) -> None:
    unreachable = await run_cli("ls", url=f"http://127.0.0.1:{free_port()}")
    assert unreachable.code != 0 and "cannot reach" in unreachable.stderr
    assert_one_line_error(unreachable.stderr)
    async with harness.serve(**keyed()) as url:
        wrong_key = await run_cli("create", url=url, key="nope")
        assert wrong_key.code != 0 and "unauthorized" in wrong_key.stderr
        assert_one_line_error(wrong_key.stderr)
        unknown = await run_cli("exec", str(uuid.uuid4()), "--", "true", url=url, key=USER_KEYS["alice"])
        assert unknown.code != 0 and "not found" in unknown.stderr.lower()
        assert_one_line_error(unknown.stderr)
        malformed = await run_cli("info", "not-an-id", url=url, key=USER_KEYS["alice"])
        assert malformed.code != 0
        assert_one_line_error(malformed.stderr)


async def test_bad_limits_are_usage_errors_before_anything_is_sent() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"  # never asked: the options are checked first
    memory, cpus = await asyncio.gather(
        run_cli("create", "--memory", "1", url=unreachable),
        run_cli("run", "--cpus", "0", "--", "true", url=unreachable),
    )
    for result, option in ((memory, "--memory"), (cpus, "--cpus")):
        assert result.code == 2, result.stderr
        assert option in result.stderr and "Traceback" not in result.stderr


async def test_convoy_serve_runs_a_gateway(harness: Harness) -> None:
    """``convoy serve`` as a subprocess: it answers, runs a command, and stops on SIGINT."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(url) | {
        "CONVOY_STATE_DIR": str(harness.settings.state_dir),
        "CONVOY_INSTALL": harness.settings.install,
    }
    server = await start_cli("serve", "--port", str(port), "--runtime", "process", env=env)
    try:

        async def answering() -> bool:
            async with AsyncConvoyClient(url) as client:
                try:
                    return await client.count() >= 0
                except Exception:
                    assert server.returncode is None, "convoy serve exited"
                    return False

        await eventually(answering)
        result = await run_cli("run", "--", "sh", "-c", "echo served", url=url)
        assert (result.code, result.stdout) == (0, "served\n")
    finally:
        if server.returncode is None:
            os.kill(server.pid, signal.SIGINT)
        assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


async def test_sigint_during_run_cancels_and_deletes_the_conversation(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client:
        process = await start_cli("run", "--", "echo started; exec sleep 300", env=cli_env(url))
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        assert line == b"started\n"
        assert await client.count() == 1
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 130
        assert await client.count() == 0


async def test_events_follow_prints_live_events_until_interrupted(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        process = await start_cli("--json", "events", str(convo.id), "--follow", env=cli_env(url))
        assert process.stdout is not None
        first = json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT))
        assert first["seq"] == 1
        note = await convo.trigger({"type": "Note", "text": "live"})
        seen = [first]
        while seen[-1]["id"] != str(note.id):
            seen.append(json.loads(await asyncio.wait_for(process.stdout.readline(), TIMEOUT)))
        assert [frame["seq"] for frame in seen] == list(range(1, note.seq + 1))
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 130


@pytest.mark.parametrize(
    ("args", "setting"),
    [(("serve", "--port", "99999"), "port"), (("serve", "--runtime", "nomad"), "runtime")],
)
async def test_a_bad_setting_is_a_usage_error(args: tuple[str, ...], setting: str) -> None:
    result = await run_cli(*args, url="http://127.0.0.1:9")
    assert result.code == 2, result
    assert f"invalid setting {setting}" in result.stderr and "Traceback" not in result.stderr
