"""Helpers of the Kubernetes runtime's tests: settings and runtimes on the fake API server
(``fake_kube``: real HTTP, real REST paths, schema validation, a simulated controller and
kubelet whose pods run the agent as local processes), and a look at what the API holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from fake_kube.harness import FakeKube

from gateway.runtimes.kubernetes import KubernetesRuntime
from gateway.settings import Settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
RBAC, RBAC_PODS_MODE = DEPLOY / "rbac.yaml", DEPLOY / "rbac-pods-mode.yaml"
#: Where each kind lives on the API: (group, version, plural).
PATHS = {
    "sandboxes": ("agents.x-k8s.io", "v1alpha1"),
    "sandboxclaims": ("extensions.agents.x-k8s.io", "v1alpha1"),
    "sandboxtemplates": ("extensions.agents.x-k8s.io", "v1alpha1"),
    "sandboxwarmpools": ("extensions.agents.x-k8s.io", "v1alpha1"),
    "pods": ("", "v1"),
    "secrets": ("", "v1"),
    "networkpolicies": ("networking.k8s.io", "v1"),
}


def kube_settings(kube: FakeKube, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "install": f"test-{uuid.uuid4().hex[:8]}",
        "runtime": "kubernetes",
        "kubernetes_kubeconfig": str(kube.kubeconfig),
        "start_timeout": 60.0,
        "state_dir": tmp_path / "state",
        "pool_size": 0,
        "reconcile_interval": 0.5,
    }
    return Settings(**(values | overrides))


@asynccontextmanager
async def kube_runtime(settings: Settings) -> AsyncIterator[KubernetesRuntime]:
    """A runtime on the fake; removes every sandbox it lists afterwards."""
    runtime = await KubernetesRuntime.connect(settings)
    try:
        yield runtime
    finally:
        for handle in await runtime.list():
            await runtime.remove(handle.conversation_id)
        await runtime.close()


async def held(kube: FakeKube, kind: str, install: str) -> list[dict[str, Any]]:
    """What the API holds of ``kind`` labelled with ``install`` (straight over HTTP, as kubectl would)."""
    group, version = PATHS[kind]
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    url = f"{kube.base_url}{prefix}/namespaces/{kube.namespace}/{kind}"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {kube.token}"}) as client:
        response = await client.get(url, params={"labelSelector": f"convoy.install={install}"})
    response.raise_for_status()
    items = response.json()["items"]
    return [item for item in items if not item["metadata"].get("deletionTimestamp")]


def role_rules(path: Path = RBAC) -> set[tuple[str, str, str]]:
    """``(group, resource, verb)`` that the Role in ``path`` (deploy/kubernetes) grants."""
    role = next(doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc["kind"] == "Role")
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
