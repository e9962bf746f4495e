"""The fake Kubernetes API server refuses what a real one would (422 Invalid)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from fake_kube.harness import FakeKube
from fake_kube.validation import CORE_VERSION, CRD_DIR

PODS = "/api/v1/namespaces/default/pods"
SANDBOXES = "/apis/agents.x-k8s.io/v1alpha1/namespaces/default/sandboxes"
TEMPLATES = "/apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/default/sandboxtemplates"
SECRETS = "/api/v1/namespaces/default/secrets"


def pod_spec(**container: Any) -> dict[str, Any]:
    return {
        "containers": [{"name": "agent", "image": "convoy-sandbox:latest", **container}],
        "restartPolicy": "Never",
    }


@pytest.fixture
async def api(fake_kube: FakeKube) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {fake_kube.token}"}
    async with httpx.AsyncClient(base_url=fake_kube.base_url, headers=headers, timeout=10) as client:
        yield client


def causes(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    return [cause["field"] for cause in body["details"]["causes"]]


async def test_a_valid_pod_is_stored(api: httpx.AsyncClient) -> None:
    pod = {"metadata": {"name": "ok", "labels": {"convoy.install": "t"}}, "spec": pod_spec()}
    assert (await api.post(PODS, json=pod)).status_code == 201


async def test_a_pod_with_an_unknown_or_mistyped_field_is_invalid(api: httpx.AsyncClient) -> None:
    unknown = {"metadata": {"name": "bad"}, "spec": pod_spec(imagePullPolicyy="Never")}
    assert causes(await api.post(PODS, json=unknown)) == ["spec.containers[0]"]
    mistyped = {"metadata": {"name": "bad"}, "spec": pod_spec(ports=[{"containerPort": "8080"}])}
    assert causes(await api.post(PODS, json=mistyped)) == ["spec.containers[0].ports[0].containerPort"]
    wrong_enum = {"metadata": {"name": "bad"}, "spec": {**pod_spec(), "restartPolicy": "Sometimes"}}
    assert "spec.restartPolicy" in causes(await api.post(PODS, json=wrong_enum))


async def test_server_side_rules_of_a_pod(api: httpx.AsyncClient) -> None:
    no_image = {"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "agent"}]}}
    assert causes(await api.post(PODS, json=no_image)) == ["spec.containers[0].image"]
    mounts = [{"name": "data", "mountPath": "/data"}]
    mount = {"metadata": {"name": "bad"}, "spec": pod_spec(volumeMounts=mounts)}
    assert causes(await api.post(PODS, json=mount)) == ["spec.containers[0].volumeMounts[0].name"]
    name = {"metadata": {"name": "Bad_Name"}, "spec": pod_spec()}
    assert causes(await api.post(PODS, json=name)) == ["metadata.name"]
    label = {"metadata": {"name": "ok", "labels": {"convoy.install": "not valid!"}}, "spec": pod_spec()}
    assert causes(await api.post(PODS, json=label)) == ["metadata.labels"]


async def test_a_pod_spec_is_immutable_but_its_images(api: httpx.AsyncClient) -> None:
    await api.post(PODS, json={"metadata": {"name": "fixed"}, "spec": pod_spec()})
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    image = '{"spec": {"containers": [{"name": "agent", "image": "other:1"}]}}'
    assert (await api.patch(f"{PODS}/fixed", content=image, headers=headers)).status_code == 200
    env = '{"spec": {"containers": [{"name": "agent", "env": [{"name": "A", "value": "1"}]}]}}'
    assert causes(await api.patch(f"{PODS}/fixed", content=env, headers=headers)) == ["spec"]


async def test_a_secret_needs_base64_data(api: httpx.AsyncClient) -> None:
    good = {"metadata": {"name": "token"}, "data": {"token": "c2VjcmV0"}}
    assert (await api.post(SECRETS, json=good)).status_code == 201
    bad = {"metadata": {"name": "token2"}, "data": {"token": "not base64!"}}
    assert causes(await api.post(SECRETS, json=bad)) == ["data[token]"]


async def test_a_sandbox_without_a_pod_template_is_invalid(api: httpx.AsyncClient) -> None:
    assert causes(await api.post(SANDBOXES, json={"metadata": {"name": "s"}, "spec": {}})) == ["spec"]
    assert causes(await api.post(SANDBOXES, json={"metadata": {"name": "s"}})) == ["<root>"]


async def test_a_sandbox_is_checked_down_to_its_pod_spec(api: httpx.AsyncClient) -> None:
    bad_replicas = {"metadata": {"name": "s"}, "spec": {"podTemplate": {"spec": pod_spec()}, "replicas": 2}}
    assert causes(await api.post(SANDBOXES, json=bad_replicas)) == ["spec.replicas"]
    unknown = {"metadata": {"name": "s"}, "spec": {"podTemplate": {"spec": pod_spec()}, "replica": 1}}
    assert causes(await api.post(SANDBOXES, json=unknown)) == ["spec"]
    bad_pod = {
        "metadata": {"name": "s"},
        "spec": {"podTemplate": {"spec": pod_spec(securityContext={"runAsNonRoot": "yes"})}},
    }
    assert causes(await api.post(SANDBOXES, json=bad_pod)) == [
        "spec.podTemplate.spec.containers[0].securityContext.runAsNonRoot"
    ]


async def test_a_sandbox_gets_its_schema_defaults(api: httpx.AsyncClient) -> None:
    created = await api.post(
        SANDBOXES, json={"metadata": {"name": "s"}, "spec": {"podTemplate": {"spec": pod_spec()}}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["replicas"] == 1 and created.json()["spec"]["shutdownPolicy"] == "Retain"


async def test_a_template_checks_its_network_policy_rules(api: httpx.AsyncClient) -> None:
    rules: dict[str, Any] = {
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"app": "gw"}}}],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }
        ],
        "egress": [],
    }
    spec = {"podTemplate": {"spec": pod_spec()}, "networkPolicy": rules}
    template: dict[str, Any] = {"metadata": {"name": "t"}, "spec": spec}
    assert (await api.post(TEMPLATES, json=template)).status_code == 201
    rules["ingress"][0]["ports"] = [{"port": 8080, "protocol": "TCPP"}]
    template["metadata"]["name"] = "t2"
    protocol = "spec.networkPolicy.ingress[0].ports[0].protocol"
    assert causes(await api.post(TEMPLATES, json=template)) == [protocol]
    assert causes(
        await api.post(
            TEMPLATES,
            json={
                "metadata": {"name": "t3"},
                "spec": {"podTemplate": {"spec": pod_spec()}, "envVarsInjectionPolicy": "Sometimes"},
            },
        )
    ) == ["spec.envVarsInjectionPolicy"]


@pytest.mark.parametrize("path", sorted(CRD_DIR.glob("*.yaml")), ids=lambda path: path.name)
def test_the_crds_are_valid_manifests(path: Path) -> None:
    """What an operator would apply: valid CustomResourceDefinitions, every schema structural
    (each property typed, or explicitly open)."""
    crd = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(crd, CORE_VERSION, strict=True)
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"

    def typed(schema: dict[str, Any], where: str) -> None:
        assert "type" in schema or schema.get("x-kubernetes-preserve-unknown-fields"), where
        for name, sub in (schema.get("properties") or {}).items():
            typed(sub, f"{where}.{name}")
        if isinstance(schema.get("items"), dict):
            typed(schema["items"], f"{where}[]")

    for version in crd["spec"]["versions"]:
        typed(version["schema"]["openAPIV3Schema"], version["name"])
