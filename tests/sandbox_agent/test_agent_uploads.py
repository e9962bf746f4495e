"""Uploads: staged outside the workspace, all or nothing, a full disk answered 507 naming the file."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Served, make_settings, multipart_body, multipart_head, served

from sandbox_agent import placement, uploads
from tests.helpers import eventually

BOUNDARY = "convoyuploadboundary51c2"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def staged_files(agent: Served) -> list[Path]:
    return sorted(path for path in agent.settings.upload_staging_dir.rglob("*") if path.is_file())


def workspace_tree(agent: Served) -> list[str]:
    root = agent.settings.workspace
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


async def test_an_upload_in_progress_is_never_listed_counted_or_reachable(agent: Served) -> None:
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield multipart_head(BOUNDARY, "slow.bin") + b"x" * (3 * 1024 * 1024)  # past one write batch
        await gate.wait()
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    upload = asyncio.create_task(agent.client.post("/upload/", content=body(), headers=MULTIPART))
    staged = await eventually(lambda: asyncio.to_thread(staged_files, agent))
    assert all(not path.is_relative_to(agent.settings.workspace) for path in staged)
    assert (await agent.client.get("/file-search")).json()["results"] == []
    assert (await agent.client.get("/file-count")).json() == {"count": 0}
    assert (await agent.client.get("/file/.convoy")).status_code == 404
    assert workspace_tree(agent) == []

    gate.set()
    response = await upload
    assert response.status_code == 201, response.text
    assert workspace_tree(agent) == ["slow.bin"]
    assert staged_files(agent) == []


async def test_what_a_crash_left_in_the_staging_dir_is_removed_at_start(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    leftover = settings.upload_staging_dir / "0123abcd" / "0.part"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a file")
    async with served(serve, settings):
        assert not leftover.exists()
        assert settings.upload_staging_dir.is_dir()


async def test_a_full_disk_while_receiving_is_507_naming_the_file_and_writes_nothing(
    agent: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = uploads.write_all

    def write(fd: int, data: bytes) -> None:
        if b"SECOND" in data:
            raise disk_full()
        real_write(fd, data)

    monkeypatch.setattr(uploads, "write_all", write)
    files = {"a.txt": b"first", "sub/b.txt": b"SECOND", "c.txt": b"third"}
    response = await agent.client.post(
        "/upload/up", content=multipart_body(BOUNDARY, files), headers=MULTIPART
    )
    assert response.status_code == 507, response.text
    detail = response.json()["detail"]
    assert "'up/sub/b.txt'" in detail and "No space left on device" in detail, detail
    assert workspace_tree(agent) == []
    assert staged_files(agent) == []


async def test_a_failure_placing_one_file_undoes_the_whole_upload(
    agent: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = agent.settings.workspace
    (workspace / "up").mkdir()
    (workspace / "up" / "keep.txt").write_bytes(b"old content")
    real_rename = placement._rename

    def rename(source: Any, target: Any) -> None:
        if Path(target).name == "c.txt":
            raise disk_full()
        real_rename(source, target)

    monkeypatch.setattr(placement, "_rename", rename)
    files = {"new/deep/a.txt": b"alpha", "keep.txt": b"new content", "c.txt": b"gamma", "d.txt": b"delta"}
    response = await agent.client.post(
        "/upload/up", content=multipart_body(BOUNDARY, files), headers=MULTIPART
    )
    assert response.status_code == 507, response.text
    assert "'up/c.txt'" in response.json()["detail"]
    # a.txt and keep.txt were in place already: a.txt and its new dirs went again, keep.txt is back
    assert workspace_tree(agent) == ["up", "up/keep.txt"]
    assert (workspace / "up" / "keep.txt").read_bytes() == b"old content"
    assert staged_files(agent) == []


async def test_a_name_uploaded_twice_then_undone_is_gone(
    agent: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = placement._rename
    calls: list[str] = []

    def rename(source: Any, target: Any) -> None:
        calls.append(Path(target).name)
        if Path(target).name == "z.txt":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(source, target)

    monkeypatch.setattr(placement, "_rename", rename)
    # multipart_body cannot repeat a name: this body is built part by part
    parts = b"".join(
        multipart_head(BOUNDARY, name) + data + b"\r\n"
        for name, data in (("x.txt", b"one"), ("x.txt", b"two"), ("z.txt", b"zed"))
    )
    parts += f"--{BOUNDARY}--\r\n".encode()
    response = await agent.client.post("/upload/", content=parts, headers=MULTIPART)
    assert response.status_code == 500, response.text
    assert "'z.txt'" in response.json()["detail"] and "no file of this upload" in response.json()["detail"]
    assert calls == ["x.txt", "x.txt", "z.txt"]
    assert workspace_tree(agent) == []


async def test_another_mount_is_a_copy_then_a_rename(agent: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    real_rename = placement._rename
    staging = agent.settings.upload_staging_dir

    def rename(source: Any, target: Any) -> None:
        if Path(source).is_relative_to(staging):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_rename(source, target)

    monkeypatch.setattr(placement, "_rename", rename)
    files = {"a.txt": b"alpha", "b/c.bin": bytes(range(256))}
    response = await agent.client.post("/upload/", content=multipart_body(BOUNDARY, files), headers=MULTIPART)
    assert response.status_code == 201, response.text
    assert workspace_tree(agent) == ["a.txt", "b", "b/c.bin"]  # no temporary copy left beside them
    assert (agent.settings.workspace / "b" / "c.bin").read_bytes() == bytes(range(256))
    assert staged_files(agent) == []


async def test_a_name_too_long_for_the_file_system_is_400_not_500(agent: Served) -> None:
    name = "n" * 300
    touched = await agent.client.post(f"/file/{name}")
    assert touched.status_code == 400, touched.text
    response = await agent.client.post(
        "/upload/", content=multipart_body(BOUNDARY, {name: b"x"}), headers=MULTIPART
    )
    assert response.status_code == 400, response.text
    assert name in response.json()["detail"]
    assert workspace_tree(agent) == []
