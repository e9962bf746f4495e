"""The kinds the fake API server serves, and where each lives in the REST tree.

Only what the Kubernetes runtime uses: four core kinds, NetworkPolicy and the
four agent-sandbox kinds (v1alpha1 of ``agents.x-k8s.io`` and
``extensions.agents.x-k8s.io``). Every kind here is namespaced.
"""

from __future__ import annotations

from dataclasses import dataclass

SANDBOX_GROUP = "agents.x-k8s.io"
EXTENSIONS_GROUP = "extensions.agents.x-k8s.io"


@dataclass(frozen=True)
class Resource:
    """One REST resource: ``group`` is empty for the core (legacy) API."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    short_names: tuple[str, ...] = ()
    # Whether ``/status`` is a subresource: then a write to the object keeps its status
    # and a write to ``/status`` keeps everything else.
    status_subresource: bool = True
    # Custom resources take no strategic-merge patch (a real server answers 415).
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> tuple[str, str]:
        return self.group, self.version


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "pods", "Pod", "pod", ("po",)),
    Resource("", "v1", "secrets", "Secret", "secret", status_subresource=False),
    Resource("", "v1", "services", "Service", "service", ("svc",)),
    Resource("", "v1", "configmaps", "ConfigMap", "configmap", ("cm",), status_subresource=False),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", "networkpolicy", ("netpol",)),
    Resource(SANDBOX_GROUP, "v1alpha1", "sandboxes", "Sandbox", "sandbox", ("sandbox",), custom=True),
    Resource(EXTENSIONS_GROUP, "v1alpha1", "sandboxclaims", "SandboxClaim", "sandboxclaim", custom=True),
    Resource(
        EXTENSIONS_GROUP, "v1alpha1", "sandboxwarmpools", "SandboxWarmPool", "sandboxwarmpool", custom=True
    ),
    Resource(
        EXTENSIONS_GROUP,
        "v1alpha1",
        "sandboxtemplates",
        "SandboxTemplate",
        "sandboxtemplate",
        status_subresource=False,
        custom=True,
    ),
)

BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    """The resource at ``/api[s]/{group}/{version}/.../{plural}``, or None."""
    return BY_PATH.get((group, version, plural))


def groups() -> dict[str, list[str]]:
    """Every named group (not the core one) and its versions."""
    found: dict[str, list[str]] = {}
    for resource in RESOURCES:
        if resource.group and resource.version not in found.setdefault(resource.group, []):
            found[resource.group].append(resource.version)
    return found
