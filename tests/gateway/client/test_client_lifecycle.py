"""The blocking client's pause, resume, fork and snapshots against a real gateway (memory runtime)."""

from __future__ import annotations

import asyncio

from gw_helpers import Harness

from gateway.client import ConversationStatus, ConvoyClient, NotFound


async def test_pause_fork_and_snapshots_with_the_blocking_client(harness: Harness) -> None:
    async with harness.serve() as url:
        await asyncio.to_thread(_drive, url)


def _drive(url: str) -> None:
    with ConvoyClient(url) as client, client.create(title="base", on_idle="pause") as convo:
        assert convo.info.on_idle == "pause"
        convo.run("printf kept > note", check=True)
        assert convo.pause().status is ConversationStatus.PAUSED
        assert client.get(convo.id).status is ConversationStatus.PAUSED
        assert convo.resume().status is ConversationStatus.READY

        with convo.fork() as fork:
            assert fork.info.title == "base (fork)" and fork.files.read_bytes("note") == b"kept"
            assert next(iter(fork.events(types=["Forked"]))).detail.from_conversation_id == convo.id  # type: ignore[union-attr]
        snapshot = convo.snapshot("kept")
        assert snapshot.name == "kept" and client.snapshot(snapshot.id) == snapshot
        assert [s.id for s in client.snapshots()] == [snapshot.id]
        with client.create(snapshot=snapshot.id) as again:
            assert again.files.read_bytes("note") == b"kept"
        client.delete_snapshot(snapshot.id)
        client.delete_snapshot(snapshot.id, missing_ok=True)
        try:
            client.snapshot(snapshot.id)
        except NotFound:
            pass
        else:
            raise AssertionError("a deleted snapshot is 404")
