"""Snapshots and forks: they copy the workspace and stay independent, a fork's first event
after READY names its original, snapshots are private, bounded by a quota, and outlive their
conversation and the gateway; nothing is left once conversations and snapshots are deleted."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from gw_helpers import ADMIN_KEY, USER_KEYS, Harness, auth, create_ready, keyed, leftovers
from lifecycle_helpers import content, run, status_of

from gateway.runtimes.docker_labels import install_filter

ALICE, BOB = USER_KEYS["alice"], USER_KEYS["bob"]


async def _events(client: Any, cid: str) -> list[dict[str, Any]]:
    return list((await client.get(f"/conversation/{cid}/event")).json()["results"])


async def test_fork_and_snapshot_copy_the_workspace_and_stay_independent(any_harness: Harness) -> None:
    async with any_harness.client() as client:
        original = await create_ready(client, title="work", idle_timeout=900, limits={"pids": 200})
        await run(client, original, "mkdir -p src && printf one > src/a.txt && ln -s src/a.txt link")
        last_seq = (await _events(client, original))[-1]["seq"]

        forked = await client.post(f"/conversation/{original}/fork", json={})
        assert forked.status_code == 201, forked.text
        fork = forked.json()
        assert fork["status"] == "READY" and fork["title"] == "work (fork)" and fork["id"] != original
        assert fork["idle_timeout"] == 900 and fork["limits"]["pids"] == 200 and fork["owner"] == "local"
        ready, first = (await _events(client, fork["id"]))[:2]
        assert ready["detail"]["status"] == "READY"
        assert first["seq"] == 2 and first["detail"]["type"] == "Forked"
        assert first["detail"]["from_conversation_id"] == original
        assert first["detail"]["from_seq"] >= last_seq and "processes" in first["detail"]["message"]
        assert await content(client, fork["id"], "src/a.txt") == b"one"
        assert await content(client, fork["id"], "link") == b"one"

        snap = await client.post(f"/conversation/{original}/snapshot", json={"name": "before two"})
        assert snap.status_code == 201, snap.text
        snapshot = snap.json()
        assert snapshot["name"] == "before two" and snapshot["size"] >= 3 and snapshot["created_at"]
        assert (await client.get(f"/snapshot/{snapshot['id']}")).json() == snapshot

        await run(client, original, "printf two > src/a.txt")
        await run(client, fork["id"], "printf mine > b.txt")
        assert await content(client, fork["id"], "src/a.txt") == b"one"
        assert await content(client, original, "b.txt") is None

        started = await client.post("/conversation", json={"snapshot": snapshot["id"], "title": "again"})
        assert started.status_code == 201, started.text
        again = started.json()["id"]
        assert await status_of(client, again) in ("STARTING", "READY")
        assert await content(client, again, "src/a.txt") == b"one"
        await run(client, again, "printf three > src/a.txt")

        titled = await client.post(f"/conversation/{fork['id']}/fork", json={"title": "second"})
        assert titled.status_code == 201 and titled.json()["title"] == "second"
        assert await content(client, titled.json()["id"], "b.txt") == b"mine"

        cids = [original, fork["id"], again, titled.json()["id"]]
        for cid in cids:
            assert (await client.delete(f"/conversation/{cid}")).status_code == 204
        # The snapshot outlives its conversation, and the gateway.
        assert (await client.get(f"/snapshot/{snapshot['id']}")).json() == snapshot
    async with any_harness.client() as client:
        listed = (await client.get("/snapshot")).json()
        assert listed == {"results": [snapshot], "next_page_id": None}
        from_it = await create_ready(client, snapshot=snapshot["id"])
        assert await content(client, from_it, "src/a.txt") == b"one", "the snapshot kept its copy"
        assert (await client.delete(f"/conversation/{from_it}")).status_code == 204
        assert (await client.delete(f"/snapshot/{snapshot['id']}")).status_code == 204
        assert (await client.get(f"/snapshot/{snapshot['id']}")).status_code == 404
        assert (await client.delete(f"/snapshot/{snapshot['id']}")).status_code == 404
        assert (await client.get("/snapshot")).json()["results"] == []
    for cid in [*cids, from_it]:
        assert await leftovers(any_harness, cid) == []
    assert await any_harness.runtime.snapshots() == [] and await any_harness.runtime.list() == []
    assert await _installation_objects(any_harness) == []


async def _installation_objects(harness: Harness) -> list[str]:
    """Docker: every container (helpers too) and volume (snapshots too) of the installation.
    Swarm: every folder left in its snapshot store (a copy that never finished, too)."""
    if harness.kind == "swarm":
        store = harness.settings.state_dir / "swarm-snapshots" / harness.settings.install
        return [str(path) for path in store.iterdir()] if store.is_dir() else []
    if harness.kind != "docker":
        return []
    from gateway.runtimes.docker import DockerRuntime

    assert isinstance(harness.runtime, DockerRuntime)
    engine, filters = harness.runtime.engine, install_filter(harness.settings.install)
    containers = [str(c["Names"][0]) for c in await engine.containers(filters)]
    return containers + [str(v["Name"]) for v in await engine.volumes(filters)]


async def test_snapshots_are_private_paged_and_bounded_by_a_quota(harness: Harness) -> None:
    async with harness.client(**keyed(max_snapshots_per_user=2)) as client:
        cid = await create_ready(client, ALICE)
        ids = []
        for name in ("first", "second"):
            body = {"name": name}
            made = await client.post(f"/conversation/{cid}/snapshot", json=body, headers=auth(ALICE))
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
        over = await client.post(f"/conversation/{cid}/snapshot", json={"name": "third"}, headers=auth(ALICE))
        assert over.status_code == 429 and "max_snapshots_per_user" in over.json()["detail"], over.text

        mine = await client.get("/snapshot?limit=1", headers=auth(ALICE))
        page = mine.json()
        assert [s["id"] for s in page["results"]] == ids[:1] and page["next_page_id"]
        rest = await client.get(f"/snapshot?limit=1&page_id={page['next_page_id']}", headers=auth(ALICE))
        assert [s["id"] for s in rest.json()["results"]] == ids[1:] and rest.json()["next_page_id"] is None
        assert (await client.get("/snapshot?page_id=nonsense", headers=auth(ALICE))).status_code == 422

        # Bob sees none of them, cannot use or delete them, and cannot snapshot Alice's conversation.
        assert (await client.get("/snapshot", headers=auth(BOB))).json()["results"] == []
        for method in ("GET", "DELETE"):
            response = await client.request(method, f"/snapshot/{ids[0]}", headers=auth(BOB))
            assert response.status_code == 404, method
        used = await client.post("/conversation", json={"snapshot": ids[0]}, headers=auth(BOB))
        assert used.status_code == 404 and "snapshot" in used.json()["detail"]
        for action in ("snapshot", "fork"):
            other = await client.post(f"/conversation/{cid}/{action}", json={}, headers=auth(BOB))
            assert other.status_code == 404, action
        unknown = await client.post("/conversation", json={"snapshot": str(UUID(int=1))}, headers=auth(ALICE))
        assert unknown.status_code == 404
        everyone = (await client.get("/snapshot", headers=auth(ADMIN_KEY))).json()["results"]
        assert sorted(s["id"] for s in everyone) == sorted(ids)
        assert all(s["owner"] == "alice" for s in everyone)

        # An admin's fork of Alice's conversation is Alice's.
        fork = await client.post(f"/conversation/{cid}/fork", json={}, headers=auth(ADMIN_KEY))
        assert fork.status_code == 201 and fork.json()["owner"] == "alice"
        forked = await client.get(f"/conversation/{fork.json()['id']}", headers=auth(ALICE))
        assert forked.status_code == 200
        for snapshot_id in ids:
            assert (await client.delete(f"/snapshot/{snapshot_id}", headers=auth(ALICE))).status_code == 204
        assert await harness.runtime.snapshots() == []
