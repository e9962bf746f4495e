"""The task path's lean pieces keep their contracts: journal batches written on the loop or in a
thread, in order; the OOM counter read afresh from a file kept open; the inherited environment
follows changes of the agent's; event ids are version 4 UUIDs whose key the index finds."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID

import pytest

from sandbox_agent import journal
from sandbox_agent.events import new_event_id
from sandbox_agent.journal import Journal
from sandbox_agent.runnables import oom
from sandbox_agent.runnables.process import child_env
from sandbox_agent.settings import AgentSettings


async def test_small_and_large_batches_reach_the_file_whole_and_in_order(tmp_path: Path) -> None:
    log = Journal(tmp_path / "j.jsonl")
    log.load(lambda offset, line: True)
    log.start()
    small = [b"a" * 10, b"b" * 20]
    big = b"c" * (journal.INLINE_WRITE_BYTES * 2)  # past the inline limit: a worker thread writes it
    offsets = [log.append(line) for line in small]
    offsets.append(log.append(big))
    offsets.append(log.append(b"d"))
    await log.flush()
    assert log.flushed == log.end
    await log.close()
    lines = [*small, big, b"d"]
    assert (tmp_path / "j.jsonl").read_bytes() == b"".join(line + b"\n" for line in lines)
    assert offsets == [0, 11, 32, 32 + len(big) + 1]


async def test_lines_appended_before_start_are_written_once_started(tmp_path: Path) -> None:
    log = Journal(tmp_path / "j.jsonl")
    log.load(lambda offset, line: True)
    log.append(b"early")
    log.start()
    await log.flush()
    await log.close()
    assert (tmp_path / "j.jsonl").read_bytes() == b"early\n"


def test_the_detected_counter_is_read_afresh_through_the_kept_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "memory.events"
    counter.write_text("oom 0\noom_kill 1\n")
    monkeypatch.setattr(oom, "detect", lambda: counter)
    oom._detected_fd.cache_clear()
    settings = AgentSettings(workspace=tmp_path / "w", state_dir=tmp_path / "s", token="t" * 16)
    try:
        assert oom.oom_kills(settings) == 1
        counter.write_text("oom 0\noom_kill 12\n")  # rewritten in place, as the kernel's changes
        assert oom.oom_kills(settings) == 12
    finally:
        fd = oom._detected_fd()
        if fd is not None:
            os.close(fd)
        oom._detected_fd.cache_clear()


def test_the_inherited_environment_follows_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOY_TEST_LEAN", "one")
    assert child_env({})["CONVOY_TEST_LEAN"] == "one"
    monkeypatch.setenv("CONVOY_TEST_LEAN", "two")
    assert child_env({"OWN": "x"})["CONVOY_TEST_LEAN"] == "two"
    monkeypatch.delenv("CONVOY_TEST_LEAN")
    assert "CONVOY_TEST_LEAN" not in child_env({})
    assert "OWN" not in child_env({})  # a task's own variables never stay for the next one


def test_event_ids_are_version_4_uuids_with_their_index_key() -> None:
    seen = set()
    for _ in range(200):
        text, key = new_event_id()
        event_id = UUID(text.decode())
        assert str(event_id).encode() == text
        assert event_id.version == 4 and event_id.variant == "specified in RFC 4122"
        assert key == event_id.int >> 64
        seen.add(text)
    assert len(seen) == 200
