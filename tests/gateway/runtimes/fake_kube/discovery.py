"""The discovery documents a client may read before it talks to a resource."""

from __future__ import annotations

from typing import Any

from fake_kube.resources import RESOURCES, groups

SERVER_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fake",
    "platform": "linux/amd64",
    "goVersion": "go1.24",
    "compiler": "gc",
    "gitCommit": "",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def api_versions(address: str) -> dict[str, Any]:
    """``GET /api``."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{name}/{version}", "version": version} for version in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_groups() -> dict[str, Any]:
    """``GET /apis``."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name, versions) for name, versions in groups().items()],
    }


def api_group(name: str) -> dict[str, Any] | None:
    """``GET /apis/{group}``, or None for a group this server does not serve."""
    versions = groups().get(name)
    return None if versions is None else _group(name, versions)


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/{group}/{version}``, or None when nothing is served there."""
    entries: list[dict[str, Any]] = []
    for resource in RESOURCES:
        if resource.group_version != (group, version):
            continue
        entries.append(
            {
                "name": resource.plural,
                "singularName": resource.singular,
                "namespaced": True,
                "kind": resource.kind,
                "verbs": _VERBS,
                "shortNames": list(resource.short_names),
            }
        )
        if resource.status_subresource:
            entries.append(
                {
                    "name": f"{resource.plural}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": resource.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not entries:
        return None
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }
