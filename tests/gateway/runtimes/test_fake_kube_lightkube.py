"""A real client (lightkube, the runtime's) against the fake: content types, patch types, watch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fake_kube.harness import FakeKube
from fake_kube.objects import agent_pod_spec, token_secret
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.types import PatchType

Sandbox = create_namespaced_resource("agents.x-k8s.io", "v1alpha1", "Sandbox", "sandboxes")
SandboxTemplate = create_namespaced_resource(
    "extensions.agents.x-k8s.io", "v1alpha1", "SandboxTemplate", "sandboxtemplates"
)


@pytest.fixture
async def client(fake_kube: FakeKube) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(config=KubeConfig.from_file(fake_kube.kubeconfig), trust_env=False)
    try:
        yield client
    finally:
        await client.close()


def _meta(obj: Any) -> ObjectMeta:
    assert obj.metadata is not None
    metadata: ObjectMeta = obj.metadata
    return metadata


def secret(name: str) -> Any:
    return Secret.from_dict(token_secret(name, "t"))


def sandbox(name: str, labels: dict[str, str]) -> Any:
    return Sandbox.from_dict(
        {
            "apiVersion": "agents.x-k8s.io/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": name, "labels": labels},
            "spec": {"podTemplate": {"spec": agent_pod_spec("agent-token")}, "replicas": 0},
        }
    )


async def test_lightkube_creates_lists_patches_and_deletes(client: AsyncClient, fake_kube: FakeKube) -> None:
    await client.create(secret("agent-token"))
    created = await client.create(sandbox("one", {"convoy.install": "x"}))
    assert _meta(created).uid and created.spec["replicas"] == 0
    await client.create(sandbox("two", {"convoy.install": "y"}))
    names = [_meta(item).name async for item in client.list(Sandbox, labels={"convoy.install": "x"})]
    assert names == ["one"]

    patched = await client.patch(
        Sandbox, "one", {"metadata": {"labels": {"extra": "1"}}}, patch_type=PatchType.MERGE
    )
    assert _meta(patched).labels == {"convoy.install": "x", "extra": "1"}
    with pytest.raises(ApiError) as refused:
        await client.patch(Sandbox, "one", {"spec": {"replicas": 5}}, patch_type=PatchType.MERGE)
    assert refused.value.status.code == 422 and refused.value.status.reason == "Invalid"
    with pytest.raises(ApiError) as strategic:
        await client.patch(
            Sandbox, "one", {"metadata": {"labels": {"a": "b"}}}, patch_type=PatchType.STRATEGIC
        )
    assert strategic.value.status.code == 415

    with pytest.raises(ApiError) as exists:
        await client.create(sandbox("one", {}))
    assert exists.value.status.code == 409 and exists.value.status.reason == "AlreadyExists"
    await client.delete(Sandbox, "one")
    with pytest.raises(ApiError) as missing:
        await client.get(Sandbox, "one")
    assert missing.value.status.code == 404

    verbs = {(record.verb, record.resource) for record in fake_kube.requests}
    assert {
        ("create", "sandboxes"),
        ("list", "sandboxes"),
        ("patch", "sandboxes"),
        ("delete", "sandboxes"),
        ("get", "sandboxes"),
        ("create", "secrets"),
    } <= verbs


async def test_lightkube_watches_from_a_list_version(client: AsyncClient) -> None:
    listing = client.list(SandboxTemplate, labels={"convoy.install": "w"})
    assert [item async for item in listing] == []
    version = listing.resourceVersion
    template = {
        "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
        "kind": "SandboxTemplate",
        "metadata": {"name": "t", "labels": {"convoy.install": "w"}},
        "spec": {"podTemplate": {"spec": agent_pod_spec("agent-token")}},
    }
    await client.create(SandboxTemplate.from_dict(template))
    await client.patch(SandboxTemplate, "t", {"spec": {"service": True}}, patch_type=PatchType.MERGE)
    events = []
    async for kind, obj in client.watch(
        SandboxTemplate, labels={"convoy.install": "w"}, resource_version=version, server_timeout=2
    ):
        events.append((kind, _meta(obj).name, obj.spec.get("service")))
        if len(events) == 2:
            break
    assert events == [("ADDED", "t", None), ("MODIFIED", "t", True)]


async def test_lightkube_sees_410_for_a_compacted_version(client: AsyncClient, fake_kube: FakeKube) -> None:
    await client.create(secret("s1"))

    async def compact() -> None:
        fake_kube.store.compact()

    await fake_kube.run(compact)
    with pytest.raises(ApiError) as gone:
        async for _ in client.watch(Pod, resource_version="1", server_timeout=2):
            pass
    assert gone.value.status.code == 410
