"""deploy/kubernetes: the manifests that run the gateway itself are valid Kubernetes objects
(kubernetes-validate's strict schemas: an unknown or misspelt field fails), and fit together
(the Deployment runs as the ServiceAccount the RoleBinding binds, its pods carry the labels the
sandboxes' NetworkPolicy admits, the Service selects them). That the Role covers every call the
runtime makes is checked against the fake API's request log in test_kubernetes_runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
VERSION = "1.33.0"


def manifests() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] == kind]


@pytest.mark.parametrize("manifest", manifests(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_every_manifest_is_schema_valid(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, VERSION, strict=True)


def test_an_invalid_manifest_would_be_refused() -> None:
    (deployment,) = by_kind("Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_the_parts_fit_together() -> None:
    (deployment,) = by_kind("Deployment")
    (service,) = by_kind("Service")
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] >= 2  # several gateways, no database
    accounts = {doc["metadata"]["name"] for doc in by_kind("ServiceAccount")}
    assert pod["spec"]["serviceAccountName"] in accounts
    bound = {subject["name"] for binding in by_kind("RoleBinding") for subject in binding["subjects"]}
    assert pod["spec"]["serviceAccountName"] in bound
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    wanted = dict(part.split("=", 1) for part in Settings().kubernetes_gateway_labels.split(","))
    assert wanted.items() <= pod["metadata"]["labels"].items()  # the sandboxes admit these pods
    env = {item["name"]: item for item in pod["spec"]["containers"][0]["env"]}
    assert env["CONVOY_RUNTIME"]["value"] == "kubernetes"
    assert "CONVOY_PREVIEW_SECRET" in env  # links signed by one gateway open on the other
    namespaces = {doc["metadata"]["name"] for doc in by_kind("Namespace")}
    assert {doc["metadata"]["namespace"] for doc in manifests() if doc["kind"] != "Namespace"} <= namespaces
