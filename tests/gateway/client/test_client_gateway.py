"""The async client against the real gateway (process runtime, real agents on loopback):
conversations, tasks (exit codes, output complete and in order, live iteration, cancel),
events, auth and limits errors; a directory round trip on both runtimes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from client_harness import conversation_behind_proxy, make_tree, read_tree
from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, keyed

from gateway.client import (
    AsyncConvoyClient,
    Conflict,
    ConvoyClient,
    Forbidden,
    LimitReached,
    NotFound,
    SandboxFailed,
    TaskFailed,
    TaskStatus,
    Unauthorized,
)
from sandbox_agent.protocol import ConversationStatusUpdate, TaskStatusUpdate, Ticker
from tests.helpers import eventually


async def test_conversation_lifecycle(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client:
        async with await client.create(title="lifecycle") as convo:
            assert convo.status.value == "READY"
            assert (await client.get(convo.id)).title == "lifecycle"
            assert convo.id in [info.id async for info in client.list(page_size=1)]
            assert await client.count() >= 1
            first = await anext(convo.events())
            assert isinstance(first.detail, ConversationStatusUpdate) and first.seq == 1
        # Leaving the block deleted it.
        with pytest.raises(NotFound):
            await client.get(convo.id)
        with pytest.raises(NotFound):
            await client.delete(convo.id)
        await client.delete(convo.id, missing_ok=True)


async def test_run_reports_exit_code_and_both_streams(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        result = await convo.run("echo out; echo err >&2; exit 3")
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert not result.ok and result.error
        with pytest.raises(TaskFailed) as failed:
            await convo.run(["sh", "-c", "exit 4"], check=True)
        assert failed.value.exit_code == 4
        py = await convo.run_python("import sys; print(sum(range(10))); sys.exit(2)")
        assert (py.exit_code, py.stdout) == (2, "45\n")
        env = await convo.run('printf %s "$GREETING"', env={"GREETING": "hi there"}, check=True)
        assert env.stdout == "hi there"


async def test_output_is_complete_and_in_order(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        result = await convo.run(["seq", "1", "5000"], check=True)
        assert result.stdout.splitlines() == [str(n) for n in range(1, 5001)]


async def test_started_task_output_arrives_live_and_wait_keeps_it(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        # The task blocks until a file appears: its first line must arrive before it can end.
        run = await convo.start_shell("echo first; while [ ! -e go ]; do sleep 0.05; done; echo second")
        chunks: list[str] = []
        async for output in run.output():
            chunks.append(output.data)
            if output.data == "first\n":
                assert not run.done
                await convo.files.touch("go")
        assert "".join(chunks) == "first\nsecond\n"
        result = await run.wait()
        assert result.stdout == "first\nsecond\n" and result.exit_code == 0


async def test_cancel_ends_a_running_task(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        run = await convo.start_shell("echo started; exec sleep 300")
        async for output in run.output():
            assert output.data == "started\n"
            break
        await run.cancel()
        result = await asyncio.wait_for(run.wait(), 60)
        assert result.status is TaskStatus.CANCELLED
        assert [t.status async for t in convo.tasks()] == [TaskStatus.CANCELLED]


async def test_ticker_events_and_client_events(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        run = await convo.start(Ticker(interval=0, iterations=25), title="ticks")
        kinds = [event.detail.type async for event in run.events()]
        assert kinds.count("Tick") == 25 and kinds[-1] == "TaskStatusUpdate"
        note = await convo.trigger({"type": "Note", "text": "hello"})
        assert (await convo.event(note.id)).seq == note.seq
        notes = [event async for event in convo.events(types=["Note"])]
        assert [event.id for event in notes] == [note.id]
        seqs = [event.seq async for event in convo.events()]
        assert seqs == list(range(1, note.seq + 1))


async def test_follow_yields_history_then_live(harness: Harness) -> None:
    async with harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        seen: list[int] = []
        async for event in convo.follow(0):
            seen.append(event.seq)
            if event.seq == 1:
                await convo.trigger({"type": "Ping"})
            if event.detail.type == "Ping":
                break
        assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 2


async def test_errors_for_auth_and_ownership(harness: Harness) -> None:
    async with harness.serve(**keyed()) as url:
        async with AsyncConvoyClient(url, api_key="wrong") as stranger:
            with pytest.raises(Unauthorized):
                await stranger.create()
        async with (
            AsyncConvoyClient(url, api_key=USER_KEYS["alice"]) as alice,
            AsyncConvoyClient(url, api_key=USER_KEYS["bob"]) as bob,
            AsyncConvoyClient(url, api_key=ADMIN_KEY) as admin,
            await alice.create(title="alice's") as convo,
        ):
            with pytest.raises(NotFound):
                await bob.get(convo.id)
            with pytest.raises(NotFound):
                await bob.open(convo.id)
            with pytest.raises(Forbidden):
                await alice.count()
            assert (await admin.get(convo.id)).owner == "alice"


async def test_limit_reached(harness: Harness) -> None:
    async with (
        harness.serve(max_conversations_per_user=1) as url,
        AsyncConvoyClient(url) as client,
        await client.create(wait=False),
    ):
        with pytest.raises(LimitReached):
            await client.create(wait=False)


async def test_output_survives_dropped_connections(harness: Harness) -> None:
    """The task's output is read over a WebSocket that the proxy cuts twice mid-stream."""
    async with (
        harness.serve() as url,
        conversation_behind_proxy(url) as (proxy, convo),
        AsyncConvoyClient(url) as direct,  # the test's own control channel, never cut
    ):
        control = await direct.open(convo.id)
        run = await convo.start_shell(
            "i=0; while [ $i -lt 3 ]; do i=$((i+1)); seq $((i*1000-999)) $((i*1000)); "
            "while [ ! -e next$i ]; do sleep 0.05; done; done"
        )
        collected: list[str] = []
        stage = 0
        async for output in run.output():
            collected.append(output.data)
            text = "".join(collected)
            if stage < 3 and text.endswith(f"{(stage + 1) * 1000}\n"):
                stage += 1
                assert proxy.cut() >= 1
                await control.files.touch(f"next{stage}")
        result = await run.wait()
    assert stage == 3
    assert result.stdout.splitlines() == [str(n) for n in range(1, 3001)]


async def test_follow_resumes_across_cuts_with_contiguous_seqs(harness: Harness) -> None:
    async with harness.serve() as url, conversation_behind_proxy(url) as (proxy, convo):
        run = await convo.start(Ticker(interval=0.001, iterations=600))
        seqs: list[int] = []
        cut = 0
        async for event in convo.follow(0):
            seqs.append(event.seq)
            if len(seqs) in (50, 250, 450):
                cut += proxy.cut() > 0
            detail = event.detail
            if isinstance(detail, TaskStatusUpdate) and detail.task_id == run.id and detail.status.is_final:
                break
    assert cut == 3
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) > 600


async def test_sandbox_failure_is_reported_with_reason(process_harness: Harness) -> None:
    """A sandbox whose agent cannot start (the process runtime hands the conversation's
    environment to the agent, and this one breaks its Python) ends in ERROR: create raises
    SandboxFailed with the reason and removes the failed conversation."""
    async with process_harness.serve() as url, AsyncConvoyClient(url) as client:
        with pytest.raises(SandboxFailed) as failed:
            await client.create(env={"PYTHONHOME": "/nonexistent"}, ready_timeout=90)
        assert failed.value.reason
        assert str(failed.value.reason) in str(failed.value)

        async def none_left() -> bool:
            return await client.count() == 0

        await eventually(none_left)


async def test_files_round_trip_and_conflicts(any_harness: Harness, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    expected = make_tree(source)
    async with any_harness.serve() as url, AsyncConvoyClient(url) as client, await client.create() as convo:
        written = await convo.upload(source, dest="in")
        assert sorted(info.path for info in written) == sorted(f"in/tree/{rel}" for rel in expected)
        assert (await convo.files.info("in/tree/empty-dir/inner")).is_dir
        assert await convo.files.count("*.dat", path="in") == 30
        assert await convo.files.read_bytes("in/tree/a/b/every-byte.bin") == expected["a/b/every-byte.bin"]
        with pytest.raises(Conflict):
            await convo.files.upload([source / "README.txt"], "in/tree", overwrite=False)
        await convo.files.mkdir("made/here")
        await convo.files.delete("in/tree/many")
        with pytest.raises(NotFound):
            await convo.files.info("in/tree/many")
        back = await convo.download("in/tree", tmp_path / "back")
        assert len(back) == len(expected) - 30
    files, dirs = read_tree(tmp_path / "back")
    assert files == {rel: data for rel, data in expected.items() if not rel.startswith("many/")}
    assert "empty-dir/inner" in dirs


def _readme_example(url: str, workdir: Path) -> tuple[int | None, str, list[str], list[int]]:
    """The README's five lines (plus what they promise), with the blocking client."""
    os.chdir(workdir)
    with ConvoyClient(url) as client, client.create(title="hello") as convo:
        convo.upload("data.csv")
        result = convo.run("wc -l data.csv")
        run = convo.start_shell("seq 3")
        chunks = [output.data for output in run.output()]
        seqs = [event.seq for event in convo.events()]
    return result.exit_code, result.stdout, chunks, seqs


async def test_blocking_client_runs_the_readme_example(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n")
    cwd = os.getcwd()
    try:
        async with harness.serve() as url:
            code, stdout, chunks, seqs = await asyncio.to_thread(_readme_example, url, tmp_path)
    finally:
        os.chdir(cwd)
    assert (code, stdout) == (0, "3 data.csv\n")
    assert "".join(chunks) == "1\n2\n3\n"
    assert seqs == list(range(1, len(seqs) + 1))
