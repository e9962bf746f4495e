"""The blocking client against a real gateway: every forwarded method reaches the gateway and
returns what its async twin returns. The client runs in a worker thread (it owns a loop of its
own); the gateway is served on the test's loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gw_helpers import Harness

from gateway.client import ConvoyClient, NotFound, TaskFailed, TaskStatus
from sandbox_agent.protocol import ConversationStatus


def _conversations_and_tasks(url: str) -> None:
    with ConvoyClient(url) as client:
        assert client.count() == 0
        with client.create(title="sync") as convo:
            assert convo.status is ConversationStatus.READY and convo.info.id == convo.id
            assert client.get(convo.id).title == "sync"
            assert [info.id for info in client.list()] == [convo.id]
            assert client.open(str(convo.id)).id == convo.id
            assert convo.refresh().status is ConversationStatus.READY
            assert convo.wait_ready().status is ConversationStatus.READY
            assert convo.agent_info().limits is not None

            result = convo.run("echo hi; echo err >&2")
            assert (result.stdout, result.stderr, result.ok) == ("hi\n", "err\n", True)
            with pytest.raises(TaskFailed):
                convo.run("exit 3", check=True)
            assert convo.run_python("print(6 * 7)").stdout == "42\n"

            run = convo.start_shell("echo a; echo b")
            assert "".join(output.data for output in run.output()) == "a\nb\n"
            assert run.wait().stdout == "a\nb\n" and run.done
            assert run.refresh().status is TaskStatus.COMPLETED
            watched = convo.start_shell("echo c")
            kinds = [type(event.detail).__name__ for event in watched.events()]
            assert kinds[-1] == "TaskStatusUpdate" and "TaskOutput" in kinds, kinds

            sleeper = convo.start_shell("exec sleep 300", title="sleeper")
            assert sleeper.cancel().id == sleeper.id
            assert sleeper.wait().status is TaskStatus.CANCELLED
            assert convo.task(sleeper.id).title == "sleeper"
            statuses = sorted(task.status.value for task in convo.tasks())
            assert statuses == ["CANCELLED", "COMPLETED", "COMPLETED", "COMPLETED", "COMPLETED", "ERROR"]

            note = convo.trigger({"type": "Note", "text": "from a thread"})
            assert convo.event(note.id).id == note.id
            seqs = [event.seq for event in convo.events()]
            assert seqs == list(range(1, len(seqs) + 1)) and note.seq in seqs
            follow = convo.follow(0)
            assert next(follow).seq == 1
            follow.close()
        client.delete(convo.id, missing_ok=True)
        with pytest.raises(NotFound):
            client.delete(convo.id)
        assert client.count() == 0


def _files(url: str, workdir: Path) -> None:
    source = workdir / "up.txt"
    source.write_bytes(b"payload")
    with ConvoyClient(url) as client, client.create() as convo:
        files = convo.files
        assert files.mkdir("d").is_dir
        assert files.touch("d/x.txt").size == 0
        assert files.info("d/x.txt").path == "d/x.txt"
        assert [info.path for info in convo.upload(source, dest="d")] == ["d/up.txt"]
        assert [info.path for info in files.upload([source], "e", overwrite=True)] == ["e/up.txt"]
        assert files.count("*.txt", path="d") == 2
        assert sorted(info.path for info in files.search(q="up")) == ["d/up.txt", "e/up.txt"]
        assert files.read_bytes("d/up.txt") == b"payload"
        assert b"".join(files.stream("e/up.txt")) == b"payload"
        convo.download("d", workdir / "back")
        assert (workdir / "back" / "up.txt").read_bytes() == b"payload"
        files.download("e/up.txt", workdir / "copy.txt")
        assert (workdir / "copy.txt").read_bytes() == b"payload"
        files.delete("d")
        with pytest.raises(NotFound):
            files.info("d")


async def test_blocking_conversations_and_tasks(harness: Harness) -> None:
    async with harness.serve() as url:
        await asyncio.to_thread(_conversations_and_tasks, url)


async def test_blocking_files(harness: Harness, tmp_path: Path) -> None:
    async with harness.serve() as url:
        await asyncio.to_thread(_files, url, tmp_path)
