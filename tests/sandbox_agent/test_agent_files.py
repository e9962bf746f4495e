"""Files over HTTP: mkdir, touch, info, delete, upload, download with Range, search, count."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Served, make_settings, multipart_body, multipart_head, served

from sandbox_agent.protocol import FileInfo

BOUNDARY = "convoytestboundary7d1f3a"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def exists(path: Path) -> bool:
    return os.path.lexists(path)


async def test_mkdir_touch_info_delete(agent: Served) -> None:
    made = await agent.client.post("/dir/a/b")
    assert made.status_code == 201
    assert FileInfo.model_validate(made.json()).is_dir
    assert made.json()["path"] == "a/b" and made.json()["name"] == "b"
    assert (await agent.client.post("/dir/a/b")).status_code == 409

    touched = await agent.client.post("/file/a/b/c.txt")
    assert touched.status_code == 201
    assert touched.json() | {"modified": None} == {
        "name": "c.txt",
        "path": "a/b/c.txt",
        "size": 0,
        "is_dir": False,
        "modified": None,
    }
    assert (await agent.client.post("/file/a/b/c.txt")).status_code == 409
    assert (await agent.client.post("/file/new/parents/x")).status_code == 201
    assert (await agent.client.post("/dir/a/b/c.txt/sub")).status_code == 409  # a file is in the way

    info = await agent.client.get("/file/a")
    assert info.json()["is_dir"] is True
    assert (await agent.client.get("/file/missing")).status_code == 404
    assert (await agent.client.get("/file/")).json()["path"] == ""

    assert (await agent.client.delete("/file/a/b/c.txt")).status_code == 204
    assert not exists(agent.settings.workspace / "a/b/c.txt")
    assert (await agent.client.delete("/file/a")).status_code == 204  # a tree
    assert not exists(agent.settings.workspace / "a")
    assert (await agent.client.delete("/file/a")).status_code == 404


async def test_the_root_cannot_be_deleted(agent: Served) -> None:
    for path in ("/file/", "/file/./"):
        response = await agent.client.delete(path)
        assert response.status_code == 400, path
    assert agent.settings.workspace.is_dir()


async def test_deleting_a_symlink_removes_the_link_not_the_target(agent: Served) -> None:
    workspace = agent.settings.workspace
    (workspace / "keep").mkdir()
    (workspace / "keep" / "file").write_text("precious")
    os.symlink("keep", workspace / "link")
    assert (await agent.client.delete("/file/link")).status_code == 204
    assert not exists(workspace / "link")
    assert (workspace / "keep" / "file").read_text() == "precious"


async def test_upload_several_files_with_subdirectories(agent: Served) -> None:
    files = {"a.txt": b"alpha", "deep/er/b.bin": bytes(range(256)) * 10, "c.txt": b""}
    response = await agent.client.post(
        "/upload/up", content=multipart_body(BOUNDARY, files), headers=MULTIPART
    )
    assert response.status_code == 201, response.text
    infos = [FileInfo.model_validate(item) for item in response.json()]
    assert [i.path for i in infos] == ["up/a.txt", "up/deep/er/b.bin", "up/c.txt"]
    assert [i.size for i in infos] == [5, 2560, 0]
    for name, data in files.items():
        assert (agent.settings.workspace / "up" / name).read_bytes() == data
    assert not exists(agent.settings.workspace / ".convoy")  # staged outside the workspace
    assert list(agent.settings.upload_staging_dir.iterdir()) == []


async def test_upload_replaces_atomically_unless_overwrite_is_false(agent: Served) -> None:
    body = multipart_body(BOUNDARY, {"f.txt": b"one"})
    assert (await agent.client.post("/upload/", content=body, headers=MULTIPART)).status_code == 201
    body = multipart_body(BOUNDARY, {"f.txt": b"two"})
    assert (await agent.client.post("/upload/", content=body, headers=MULTIPART)).status_code == 201
    assert (agent.settings.workspace / "f.txt").read_bytes() == b"two"
    body = multipart_body(BOUNDARY, {"g.txt": b"new", "f.txt": b"three"})
    refused = await agent.client.post(
        "/upload/", params={"overwrite": "false"}, content=body, headers=MULTIPART
    )
    assert refused.status_code == 409
    assert (agent.settings.workspace / "f.txt").read_bytes() == b"two"
    assert not exists(agent.settings.workspace / "g.txt")  # nothing half-written


@pytest.mark.parametrize(
    ("files", "status"),
    [
        ({"../escape.txt": b"x"}, 400),
        ({"ok.txt": b"x", "/etc/abs.txt": b"x"}, 400),
        ({"a/../../b.txt": b"x"}, 400),
    ],
)
async def test_upload_refuses_paths_out_and_writes_nothing(
    agent: Served, files: dict[str, bytes], status: int
) -> None:
    response = await agent.client.post(
        "/upload/in", content=multipart_body(BOUNDARY, files), headers=MULTIPART
    )
    assert response.status_code == status
    assert not exists(agent.settings.workspace / "in" / "ok.txt")
    assert not exists(agent.settings.workspace.parent / "escape.txt")


async def test_upload_bad_bodies(agent: Served) -> None:
    no_files = multipart_body(BOUNDARY, {"x": b"1"}, field="other")
    assert (await agent.client.post("/upload/", content=no_files, headers=MULTIPART)).status_code == 422
    plain = await agent.client.post("/upload/", content=b"abc", headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    torn = multipart_body(BOUNDARY, {"t.txt": b"data"})[:-30]
    assert (await agent.client.post("/upload/", content=torn, headers=MULTIPART)).status_code == 400
    assert not exists(agent.settings.workspace / "t.txt")
    (agent.settings.workspace / "dir.txt").mkdir()
    in_the_way = multipart_body(BOUNDARY, {"dir.txt": b"x"})
    assert (await agent.client.post("/upload/", content=in_the_way, headers=MULTIPART)).status_code == 409


async def test_upload_over_the_limit_is_413(serve: Callable[..., Any], tmp_path: Path) -> None:
    async with served(serve, make_settings(tmp_path, max_upload_bytes=10_000)) as agent:
        body = multipart_body(BOUNDARY, {"big.bin": b"x" * 20_000})
        assert (await agent.client.post("/upload/", content=body, headers=MULTIPART)).status_code == 413

        async def chunked() -> AsyncIterator[bytes]:
            yield body[:5000]
            yield body[5000:]

        response = await agent.client.post("/upload/", content=chunked(), headers=MULTIPART)
        assert response.status_code == 413
        assert not exists(agent.settings.workspace / "big.bin")


async def test_a_large_upload_round_trips(agent: Served) -> None:
    size, chunk = 200 * 1024 * 1024, 1024 * 1024
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        yield multipart_head(BOUNDARY, "big/blob.bin")
        block = os.urandom(chunk)
        for n in range(size // chunk):
            data = block[n % 7 :] + block[: n % 7]  # vary the content cheaply
            sent.update(data)
            yield data
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = await agent.client.post("/upload/", content=body(), headers=MULTIPART)
    assert response.status_code == 201, response.text
    assert response.json()[0]["size"] == size
    received = hashlib.sha256()
    total = 0
    async with agent.client.stream("GET", "/file-content/big/blob.bin") as download:
        assert download.status_code == 200
        assert download.headers["content-length"] == str(size)
        async for data in download.aiter_bytes():
            received.update(data)
            total += len(data)
    assert total == size
    assert received.hexdigest() == sent.hexdigest()


async def test_ranges_of_thousands_of_digits(agent: Served) -> None:
    data = b"0123456789"
    (agent.settings.workspace / "d.bin").write_bytes(data)
    huge = "9" * 5000  # int() refuses more than 4300 digits
    cases = {
        f"bytes={huge}-": 416,
        f"bytes={huge}-{huge}": 416,
        f"bytes=3-{huge}": 206,
        f"bytes=-{huge}": 206,
    }
    for header, status in cases.items():
        part = await agent.client.get("/file-content/d.bin", headers={"range": header})
        assert part.status_code == status, (header[:20], part.text)
        if status == 206:
            assert part.content == data[3:] if header.startswith("bytes=3") else data
        else:
            assert part.json()["detail"] and part.headers["content-range"] == "bytes */10"


async def test_download_and_ranges(agent: Served) -> None:
    data = bytes(range(256)) * 4
    (agent.settings.workspace / "d.bin").write_bytes(data)
    full = await agent.client.get("/file-content/d.bin")
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes"
    cases = {
        "bytes=10-19": data[10:20],
        "bytes=1000-": data[1000:],
        "bytes=-5": data[-5:],
        "bytes=0-99999": data,
    }
    for header, expected in cases.items():
        part = await agent.client.get("/file-content/d.bin", headers={"range": header})
        assert part.status_code == 206, header
        assert part.content == expected
        start = len(data) - len(expected) if header.startswith("bytes=-") else int(header[6:].split("-")[0])
        assert part.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    beyond = await agent.client.get("/file-content/d.bin", headers={"range": "bytes=5000-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    assert "detail" in beyond.json()
    for ignored in ("bytes=0-1,5-6", "lines=1-2", "bytes=9-3"):
        whole = await agent.client.get("/file-content/d.bin", headers={"range": ignored})
        assert whole.status_code == 200 and whole.content == data
    stale = await agent.client.get("/file-content/d.bin", headers={"range": "bytes=0-1", "if-range": '"old"'})
    assert stale.status_code == 200
    fresh = await agent.client.get(
        "/file-content/d.bin", headers={"range": "bytes=0-1", "if-range": full.headers["etag"]}
    )
    assert fresh.status_code == 206 and fresh.content == data[:2]
    assert (await agent.client.get("/file-content/nope")).status_code == 404
    (agent.settings.workspace / "dir").mkdir()
    assert (await agent.client.get("/file-content/dir")).status_code == 400
    (agent.settings.workspace / "empty").write_bytes(b"")
    empty = await agent.client.get("/file-content/empty")
    assert empty.status_code == 200 and empty.content == b""


def make_tree(root: Path) -> list[str]:
    paths = ["a.txt", "a/b.py", "a/c/d.py", "a/c/e.txt", "a.b/x.py", "z/y/Z.PY", "m.py"]
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return paths


async def search_all(agent: Served, limit: int, **params: Any) -> list[str]:
    found: list[str] = []
    page_id = None
    while True:
        query = {**params, "limit": limit, **({"page_id": page_id} if page_id else {})}
        response = await agent.client.get("/file-search", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        found.extend(item["path"] for item in body["results"])
        page_id = body["next_page_id"]
        if page_id is None:
            return found


async def test_file_search_and_count(agent: Served) -> None:
    await asyncio.to_thread(make_tree, agent.settings.workspace)
    everything = await search_all(agent, 100)
    expected = [
        "a",
        "a/b.py",
        "a/c",
        "a/c/d.py",
        "a/c/e.txt",
        "a.b",
        "a.b/x.py",
        "a.txt",
        "m.py",
        "z",
        "z/y",
        "z/y/Z.PY",
    ]
    assert everything == expected
    for limit in (1, 2, 3, 5):
        assert await search_all(agent, limit) == expected
        assert await search_all(agent, limit, pattern="*.py") == ["a/b.py", "a/c/d.py", "a.b/x.py", "m.py"]
    assert await search_all(agent, 2, q="c/") == ["a/c/d.py", "a/c/e.txt"]
    assert await search_all(agent, 2, q="z.py") == ["z/y/Z.PY"]
    assert await search_all(agent, 2, path="a/c") == ["a/c/d.py", "a/c/e.txt"]
    assert await search_all(agent, 1, path="a", pattern="*.txt") == ["a/c/e.txt"]
    count = await agent.client.get("/file-count", params={"pattern": "*.py"})
    assert count.json() == {"count": 4}
    assert (await agent.client.get("/file-count")).json() == {"count": len(expected)}
    assert (await agent.client.get("/file-count", params={"path": "z"})).json() == {"count": 2}
    assert (await agent.client.get("/file-search", params={"path": "nope"})).status_code == 404
    assert (await agent.client.get("/file-search", params={"path": "a.txt"})).status_code == 400
    assert (await agent.client.get("/file-search", params={"path": "../x"})).status_code == 400


async def test_search_lists_symlinks_but_never_follows_them_out(agent: Served, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    os.symlink(outside, agent.settings.workspace / "out")
    found = await search_all(agent, 10)
    assert found == ["out"]


async def test_names_that_are_not_utf8_are_listed_not_fatal(agent: Served) -> None:
    await asyncio.to_thread((agent.settings.workspace / os.fsdecode(b"bad\xffname")).write_text, "x")
    found = await search_all(agent, 10)
    assert found == ["bad\ufffdname"]
    assert (await agent.client.get("/file-count")).json() == {"count": 1}
