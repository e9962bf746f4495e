"""``GET /workspace-archive`` and ``PUT /workspace-archive``: a workspace out as a tar and into
another agent as it was (files, modes, directories, links kept as links); an archive that would
leave the workspace is refused whole; both want the token."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from agent_helpers import Served, make_settings, served


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


async def test_a_workspace_goes_out_and_into_another_agent_as_it_was(
    agent: Served, serve: Callable[..., Any], tmp_path: Path
) -> None:
    root = agent.settings.workspace
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "deep" / "a.txt").write_bytes(b"alpha")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # past the agent's body limit
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir()
    os.symlink("src/deep/a.txt", root / "link")
    os.link(root / "run.sh", root / "hard.sh")
    os.mkfifo(root / "fifo")  # left out
    archive = await agent.client.get("/workspace-archive")
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/x-tar"

    async with served(serve, make_settings(tmp_path / "other")) as other:
        filled = await other.client.put("/workspace-archive", content=archive.content)
        assert filled.status_code == 200, filled.text
        copy = other.settings.workspace
        assert (copy / "src" / "deep" / "a.txt").read_bytes() == b"alpha"
        assert (copy / "big.bin").read_bytes() == (root / "big.bin").read_bytes()
        assert (copy / "run.sh").stat().st_mode & 0o777 == 0o755
        assert (copy / "hard.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
        assert (copy / "empty").is_dir()
        assert os.readlink(copy / "link") == "src/deep/a.txt"
        assert not (copy / "fifo").exists()
        listed = (await other.client.get("/file/src/deep/a.txt")).json()
        assert listed["size"] == 5


async def test_an_archive_that_leaves_the_workspace_is_refused_whole(agent: Served, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    bad = [
        _tar(_file("ok.txt", b"1"), _file("../escape.txt", b"x")),
        _tar(_file("ok.txt", b"1"), _file("/abs.txt", b"x")),
        _tar(_file("ok.txt", b"1"), _link("out", str(outside)), _file("out/escape.txt", b"x")),
    ]
    for body in bad:
        answer = await agent.client.put("/workspace-archive", content=body)
        assert answer.status_code == 422, answer.text
        assert "detail" in answer.json()
    assert not (agent.settings.workspace / "ok.txt").exists()
    assert list(outside.iterdir()) == []
    garbage = await agent.client.put("/workspace-archive", content=b"no tar at all" * 100)
    assert garbage.status_code == 422


async def test_the_archive_routes_want_the_token(agent: Served) -> None:
    async with httpx.AsyncClient(base_url=agent.url) as anonymous:
        assert (await anonymous.get("/workspace-archive")).status_code == 401
        assert (await anonymous.put("/workspace-archive", content=b"")).status_code == 401
