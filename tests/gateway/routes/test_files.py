"""Files through the gateway, on both runtimes: a large upload and download streamed
both ways and compared by hash, Range requests, the small file routes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gw_helpers import Harness, create_ready

MiB = 1024 * 1024
#: Large enough to stream in many chunks both ways; smaller on Docker, where every
#: byte also crosses the relay container (the whole suite runs on a shared 2-core machine).
SIZES = {"process": 120 * MiB, "docker": 40 * MiB, "swarm": 40 * MiB}


def _make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            file.write(chunk)
    return digest.hexdigest()


async def test_large_upload_and_download_round_trip(any_harness: Harness, tmp_path: Path) -> None:
    size = SIZES[any_harness.kind]
    source = tmp_path / "big.bin"
    expected = _make_file(source, size)
    async with any_harness.client() as client:
        conversation_id = await create_ready(client)
        base = f"/conversation/{conversation_id}"
        with source.open("rb") as file:
            uploaded = await client.post(f"{base}/upload/data", files=[("files", ("nested/big.bin", file))])
        assert uploaded.status_code == 201, uploaded.text
        [info] = uploaded.json()
        assert info["path"] == "data/nested/big.bin" and info["size"] == size

        digest = hashlib.sha256()
        received = 0
        async with client.stream("GET", f"{base}/file-content/data/nested/big.bin") as response:
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
                received += len(chunk)
        assert received == size
        assert digest.hexdigest() == expected

        ranged = await client.get(
            f"{base}/file-content/data/nested/big.bin", headers={"Range": "bytes=10-19"}
        )
        assert ranged.status_code == 206
        with source.open("rb") as file:
            file.seek(10)
            assert ranged.content == file.read(10)


async def test_small_file_routes(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        conversation_id = await create_ready(client)
        base = f"/conversation/{conversation_id}"
        assert (await client.post(f"{base}/dir/src/pkg")).status_code == 201
        touched = await client.post(f"{base}/file/src/pkg/empty.txt")
        assert touched.status_code == 201 and touched.json()["size"] == 0
        uploaded = await client.post(
            f"{base}/upload/src", files=[("files", ("a.py", b"print(1)\n")), ("files", ("b.py", b"x = 2\n"))]
        )
        assert uploaded.status_code == 201, uploaded.text
        again = await client.post(
            f"{base}/upload/src", params={"overwrite": "false"}, files=[("files", ("a.py", b"other"))]
        )
        assert again.status_code == 409, again.text
        assert (await client.get(f"{base}/file-content/src/a.py")).content == b"print(1)\n"

        found = await client.get(f"{base}/file-search", params={"pattern": "**/*.py", "limit": 1})
        assert found.status_code == 200, found.text
        page = found.json()
        assert len(page["results"]) == 1 and page["next_page_id"]
        count = await client.get(f"{base}/file-count", params={"pattern": "**/*.py"})
        assert count.json() == {"count": 2}

        info = await client.get(f"{base}/file/src/a.py")
        assert info.json()["name"] == "a.py" and info.json()["is_dir"] is False
        assert (await client.delete(f"{base}/file/src")).status_code == 204
        assert (await client.get(f"{base}/file/src/a.py")).status_code == 404
        escape = await client.get(f"{base}/file/..%2F..%2Fetc%2Fpasswd")
        assert escape.status_code in (400, 403, 404), escape.text
        assert "detail" in escape.json()

        agent = await client.get(f"{base}/agent-info")
        assert agent.status_code == 200
        assert {"Ticker", "Shell", "Python"} <= set(agent.json()["runnables"])
