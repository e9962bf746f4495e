"""ArchiveStore: a snapshot's archive and meta written as they stream in, listed, read back and
removed; a transfer that breaks off leaves nothing, listed or not."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import RuntimeFailure
from gateway.runtimes.base import SnapshotInfo
from gateway.runtimes.snapshot_archives import ArchiveStore


def _info() -> SnapshotInfo:
    return SnapshotInfo(
        uuid.uuid4(), "alice", "one", datetime.now(UTC).replace(microsecond=0), 0, uuid.uuid4()
    )


def _archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


async def _chunks(data: bytes, size: int = 1000, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        if fail_after is not None and at >= fail_after:
            raise RuntimeFailure("the transfer broke off")
        yield data[at : at + size]


async def test_a_snapshot_is_saved_listed_read_back_and_removed(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "snapshots" / "install")
    data = _archive({"a.txt": b"alpha", "dir/b.txt": b"beta!"})
    saved = await store.save(_info(), _chunks(data))
    assert saved.size == 10  # the files' bytes, as a folder snapshot counts them
    again = ArchiveStore(tmp_path / "snapshots" / "install")  # another gateway sharing the directory
    assert await again.every() == [saved]
    assert b"".join([chunk async for chunk in again.chunks(saved.id)]) == data
    assert await again.remove(saved.id) and not await again.remove(saved.id)
    assert await store.every() == []
    with pytest.raises(RuntimeFailure, match="does not exist"):
        [chunk async for chunk in store.chunks(saved.id)]


async def test_a_broken_transfer_or_no_tar_leaves_nothing(tmp_path: Path) -> None:
    store = ArchiveStore(tmp_path / "install")
    data = _archive({"a.txt": b"x" * 5000})
    with pytest.raises(RuntimeFailure, match="broke off"):
        await store.save(_info(), _chunks(data, fail_after=2000))
    with pytest.raises(RuntimeFailure, match="could not be saved"):
        await store.save(_info(), _chunks(b"no tar" * 10))
    assert await store.every() == [] and list((tmp_path / "install").iterdir()) == []
