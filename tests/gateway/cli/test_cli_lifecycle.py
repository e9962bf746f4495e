"""``convoy pause/resume``, ``fork``, ``snapshot create/ls/rm`` and ``create --from-snapshot``,
as a user runs them (a real subprocess against a real gateway on the process runtime)."""

from __future__ import annotations

import json
import uuid

from client_harness import run_cli
from gw_helpers import Harness

from gateway.client import AsyncConvoyClient


async def test_pause_resume_fork_and_snapshots_from_the_command_line(process_harness: Harness) -> None:
    async with process_harness.serve() as url, AsyncConvoyClient(url) as client:
        created = await run_cli("create", "--title", "base", "--on-idle", "pause", url=url)
        assert created.code == 0, created.stderr
        cid = str(uuid.UUID(created.stdout.strip()))
        convo = await client.open(cid)
        assert convo.info.on_idle == "pause"
        await convo.run("printf hello > greeting", check=True)

        paused = await run_cli("pause", cid, url=url)
        assert paused.code == 0 and "PAUSED" in paused.stdout, paused.stderr
        assert (await client.get(cid)).status.value == "PAUSED"
        resumed = await run_cli("--json", "resume", cid, url=url)
        assert resumed.code == 0 and json.loads(resumed.stdout)["status"] == "READY", resumed.stderr

        forked = await run_cli("fork", cid, "--title", "copy", url=url)
        assert forked.code == 0, forked.stderr
        fork = await client.open(forked.stdout.strip())
        assert fork.info.title == "copy" and (await fork.files.read_bytes("greeting")) == b"hello"

        made = await run_cli("snapshot", "create", cid, "--name", "greeting", url=url)
        assert made.code == 0, made.stderr
        sid = str(uuid.UUID(made.stdout.strip()))
        listed = await run_cli("snapshot", "ls", url=url)
        assert listed.code == 0 and sid in listed.stdout and "greeting" in listed.stdout
        started = await run_cli("create", "--from-snapshot", sid, url=url)
        assert started.code == 0, started.stderr
        again = await client.open(started.stdout.strip())
        assert await again.files.read_bytes("greeting") == b"hello"

        removed = await run_cli("snapshot", "rm", sid, url=url)
        assert removed.code == 0 and removed.stdout.strip() == sid
        twice = await run_cli("snapshot", "rm", sid, url=url)
        assert twice.code == 1 and sid in twice.stderr
        assert [s async for s in client.snapshots()] == []
        for conversation in (cid, fork.id, again.id):
            await client.delete(conversation)
