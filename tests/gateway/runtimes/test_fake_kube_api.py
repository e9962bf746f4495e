"""The fake Kubernetes API server's REST semantics (tests/gateway/runtimes/fake_kube)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_kube import rbac
from fake_kube.harness import FakeKube

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data,
    }


@pytest.fixture
async def api(fake_kube: FakeKube) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {fake_kube.token}"}
    async with httpx.AsyncClient(base_url=fake_kube.base_url, headers=headers, timeout=10) as client:
        yield client


async def watch_lines(api: httpx.AsyncClient, path: str, count: int, **params: str) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch of ``path``."""
    events: list[dict[str, Any]] = []
    async with api.stream("GET", path, params={"watch": "true", **params}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


async def test_create_get_conflict_and_not_found(api: httpx.AsyncClient) -> None:
    created = await api.post(CONFIGMAPS, json=configmap("one", colour="red"))
    assert created.status_code == 201
    metadata = created.json()["metadata"]
    assert metadata["namespace"] == "default" and metadata["uid"] and metadata["resourceVersion"]

    again = await api.post(CONFIGMAPS, json=configmap("one"))
    assert again.status_code == 409
    assert again.json()["kind"] == "Status" and again.json()["reason"] == "AlreadyExists"

    fetched = await api.get(f"{CONFIGMAPS}/one")
    assert fetched.json()["data"] == {"colour": "red"}
    missing = await api.get(f"{CONFIGMAPS}/two")
    assert missing.status_code == 404
    assert missing.json()["reason"] == "NotFound" and missing.json()["details"]["name"] == "two"


async def test_a_malformed_body_is_a_bad_request(api: httpx.AsyncClient) -> None:
    for body in (b"[1, 2]", b"{not json", b'{"metadata": "x"}'):
        response = await api.post(CONFIGMAPS, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["reason"] == "BadRequest", body


async def test_generate_name_gives_a_fresh_name(api: httpx.AsyncClient) -> None:
    body = {"metadata": {"generateName": "pool-"}, "data": {}}
    names = {(await api.post(CONFIGMAPS, json=body)).json()["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3 and all(name.startswith("pool-") and len(name) == 10 for name in names)


async def test_a_request_without_the_token_is_unauthorized(fake_kube: FakeKube) -> None:
    async with httpx.AsyncClient(base_url=fake_kube.base_url) as client:
        response = await client.get(CONFIGMAPS)
    assert response.status_code == 401 and response.json()["reason"] == "Unauthorized"


async def test_list_by_label_selector(api: httpx.AsyncClient) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", "cache")):
        await api.post(CONFIGMAPS, json=configmap(name, {"tier": tier, "app": "convoy"}))
    await api.post(CONFIGMAPS, json=configmap("d", {"tier": "web"}))

    async def names(selector: str) -> list[str]:
        listed = (await api.get(CONFIGMAPS, params={"labelSelector": selector})).json()
        assert listed["kind"] == "ConfigMapList" and int(listed["metadata"]["resourceVersion"]) > 0
        return [item["metadata"]["name"] for item in listed["items"]]

    assert await names("tier=web") == ["a", "d"]
    assert await names("app=convoy,tier!=web") == ["b", "c"]
    assert await names("tier in (db, cache)") == ["b", "c"]
    assert await names("tier notin (db),app") == ["a", "c"]
    assert await names("!app") == ["d"]
    bad = await api.get(CONFIGMAPS, params={"labelSelector": "tier in db"})
    assert bad.status_code == 400
    bad_version = await api.get(CONFIGMAPS, params={"watch": "1", "resourceVersion": "abc"})
    assert bad_version.status_code == 400 and bad_version.json()["reason"] == "BadRequest"


async def test_merge_strategic_and_json_patches(api: httpx.AsyncClient) -> None:
    await api.post(CONFIGMAPS, json=configmap("p", {"a": "1", "b": "2"}, x="1"))
    labels = {"metadata": {"labels": {"a": None, "c": "3"}}}
    merged = await api.patch(
        f"{CONFIGMAPS}/p",
        content=json.dumps(labels),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["metadata"]["labels"] == {"b": "2", "c": "3"}

    strategic = await api.patch(
        f"{CONFIGMAPS}/p",
        content=json.dumps({"data": {"y": "2"}}),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert strategic.json()["data"] == {"x": "1", "y": "2"}

    operations = [{"op": "replace", "path": "/data/x", "value": "9"}, {"op": "remove", "path": "/data/y"}]
    patched = await api.patch(
        f"{CONFIGMAPS}/p",
        content=json.dumps(operations),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.json()["data"] == {"x": "9"}

    unknown = await api.patch(f"{CONFIGMAPS}/p", content="{}", headers={"Content-Type": "text/plain"})
    assert unknown.status_code == 415


async def test_update_with_a_stale_resource_version_conflicts(api: httpx.AsyncClient) -> None:
    first = (await api.post(CONFIGMAPS, json=configmap("u", x="1"))).json()
    first["data"] = {"x": "2"}
    assert (await api.put(f"{CONFIGMAPS}/u", json=first)).status_code == 200
    first["data"] = {"x": "3"}
    stale = await api.put(f"{CONFIGMAPS}/u", json=first)
    assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"


async def test_watch_replays_from_a_resource_version_then_follows(api: httpx.AsyncClient) -> None:
    start = (await api.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
    await api.post(CONFIGMAPS, json=configmap("w", x="1"))
    await api.patch(
        f"{CONFIGMAPS}/w",
        content='{"data": {"x": "2"}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    await api.delete(f"{CONFIGMAPS}/w")
    events = await watch_lines(api, CONFIGMAPS, 3, resourceVersion=start)
    assert [event["type"] for event in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1]["object"]["data"] == {"x": "2"}
    versions = [int(event["object"]["metadata"]["resourceVersion"]) for event in events]
    assert versions == sorted(versions) and versions[0] > int(start)

    # Resuming from the last one seen gives only what came after.
    await api.post(CONFIGMAPS, json=configmap("w2"))
    resumed = await watch_lines(api, CONFIGMAPS, 1, resourceVersion=str(versions[-1]))
    assert resumed[0]["type"] == "ADDED" and resumed[0]["object"]["metadata"]["name"] == "w2"


async def test_watch_without_a_version_lists_first_and_filters_by_selector(api: httpx.AsyncClient) -> None:
    await api.post(CONFIGMAPS, json=configmap("mine", {"app": "convoy"}))
    await api.post(CONFIGMAPS, json=configmap("other", {"app": "else"}))
    events = await watch_lines(api, CONFIGMAPS, 1, labelSelector="app=convoy")
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "mine"


async def test_a_label_change_out_of_the_selection_is_a_deletion(api: httpx.AsyncClient) -> None:
    start = (await api.post(CONFIGMAPS, json=configmap("moving", {"app": "convoy"}))).json()
    await api.patch(
        f"{CONFIGMAPS}/moving",
        content='{"metadata": {"labels": {"app": "gone"}}}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    events = await watch_lines(
        api, CONFIGMAPS, 1, labelSelector="app=convoy", resourceVersion=start["metadata"]["resourceVersion"]
    )
    assert events[0]["type"] == "DELETED"


async def test_a_compacted_resource_version_is_410_gone(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    old = (await api.post(CONFIGMAPS, json=configmap("c1"))).json()["metadata"]["resourceVersion"]
    await api.post(CONFIGMAPS, json=configmap("c2"))

    async def compact() -> None:
        fake_kube.store.compact()

    await fake_kube.run(compact)
    events = await watch_lines(api, CONFIGMAPS, 1, resourceVersion=old)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_watch_timeout_and_bookmarks(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    fake_kube.api.bookmark_interval = 0.2
    version = (await api.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
    params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    async with api.stream("GET", CONFIGMAPS, params=params) as r:
        lines = [json.loads(line) async for line in r.aiter_lines() if line]
    # The stream ended by itself (timeoutSeconds) after at least one bookmark.
    assert lines and {line["type"] for line in lines} == {"BOOKMARK"}
    assert lines[0]["object"]["metadata"]["resourceVersion"] == version


async def test_delete_cascades_to_owned_objects(api: httpx.AsyncClient) -> None:
    owner = (await api.post(CONFIGMAPS, json=configmap("owner"))).json()
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    child = configmap("child")
    child["metadata"]["ownerReferences"] = [reference]
    await api.post(CONFIGMAPS, json=child)

    deleted = await api.delete(f"{CONFIGMAPS}/owner")
    assert deleted.status_code == 200 and deleted.json()["status"] == "Success"
    assert (await api.get(f"{CONFIGMAPS}/child")).status_code == 404


async def test_orphan_propagation_keeps_dependents(api: httpx.AsyncClient) -> None:
    owner = (await api.post(CONFIGMAPS, json=configmap("owner"))).json()
    child = configmap("child")
    child["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    await api.post(CONFIGMAPS, json=child)
    await api.request("DELETE", f"{CONFIGMAPS}/owner", json={"propagationPolicy": "Orphan"})
    kept = await api.get(f"{CONFIGMAPS}/child")
    assert kept.status_code == 200 and not kept.json()["metadata"]["ownerReferences"]


async def test_discovery(api: httpx.AsyncClient) -> None:
    assert (await api.get("/version")).json()["major"] == "1"
    assert (await api.get("/api")).json()["versions"] == ["v1"]
    groups = {group["name"] for group in (await api.get("/apis")).json()["groups"]}
    assert {"networking.k8s.io", "agents.x-k8s.io", "extensions.agents.x-k8s.io"} <= groups
    listed = (await api.get("/apis/agents.x-k8s.io/v1alpha1")).json()
    assert {"sandboxes", "sandboxes/status"} <= {entry["name"] for entry in listed["resources"]}
    assert (await api.get("/apis/nope.example/v1")).status_code == 404


async def test_requests_are_recorded_with_their_rbac_verb(
    api: httpx.AsyncClient, fake_kube: FakeKube
) -> None:
    await api.post(CONFIGMAPS, json=configmap("r"))
    await api.get(f"{CONFIGMAPS}/r")
    await api.get(CONFIGMAPS)
    await api.delete(f"{CONFIGMAPS}/r")
    verbs = [(record.verb, record.resource, record.code) for record in fake_kube.requests]
    assert verbs == [
        ("create", "configmaps", 201),
        ("get", "configmaps", 200),
        ("list", "configmaps", 200),
        ("delete", "configmaps", 200),
    ]


async def test_rbac_rules_are_enforced_and_checked(api: httpx.AsyncClient, fake_kube: FakeKube) -> None:
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    fake_kube.enforce(rules)
    assert (await api.get(CONFIGMAPS)).status_code == 200
    assert (await api.get("/apis")).status_code == 200  # discovery is everyone's
    refused = await api.post(CONFIGMAPS, json=configmap("x"))
    assert refused.status_code == 403 and refused.json()["reason"] == "Forbidden"
    assert 'cannot create resource "configmaps"' in refused.json()["message"]
    assert (await api.get("/api/v1/namespaces/default/secrets")).status_code == 403

    fake_kube.enforce(None)
    await api.post(CONFIGMAPS, json=configmap("y"))
    missing = rbac.uncovered(fake_kube.requests, rules)
    assert [(request.verb, request.resource) for request in missing] == [
        ("create", "configmaps"),
        ("list", "secrets"),
        ("create", "configmaps"),
    ]


def test_rules_are_read_from_a_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: gw}\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: gw}\n"
        "rules:\n- apiGroups: [agents.x-k8s.io]\n  resources: [sandboxes]\n  verbs: [create, delete]\n"
    )
    assert rbac.rules_of(manifest) == [
        {"apiGroups": ["agents.x-k8s.io"], "resources": ["sandboxes"], "verbs": ["create", "delete"]}
    ]


async def test_watches_down_ends_every_stream_until_the_block_exits(
    api: httpx.AsyncClient, fake_kube: FakeKube
) -> None:
    version = (await api.get(CONFIGMAPS)).json()["metadata"]["resourceVersion"]
    params = {"watch": "1", "resourceVersion": version}
    async with api.stream("GET", CONFIGMAPS, params=params) as open_watch, fake_kube.watches_down():
        await api.post(CONFIGMAPS, json=configmap("during"))
        # The open stream ends (what it had sent aside), a new one ends at once, empty.
        lines = [line async for line in open_watch.aiter_lines() if line]
        assert len(lines) <= 1
        again = await api.get(CONFIGMAPS, params=params)
        assert again.status_code == 200 and again.text == ""
    back = await watch_lines(api, CONFIGMAPS, 1, resourceVersion=version)
    assert back[0]["type"] == "ADDED" and back[0]["object"]["metadata"]["name"] == "during"
