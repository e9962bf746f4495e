"""The Kubernetes API calls the runtime makes, over lightkube. The only module that imports it.

Objects go in and come out as plain dicts (built by
:mod:`gateway.runtimes.kubernetes_objects`); every lightkube and HTTP error is
mapped here, once, to :mod:`gateway.errors`: no answer -> ``RuntimeUnavailable``,
404 -> ``EngineNotFound`` (``False`` from a delete: absence is its answer),
409 -> :class:`Conflict`, 410 (a watch's resourceVersion too old) -> :class:`Gone`,
anything else (422 for an object the server finds invalid, 403 for RBAC) -> ``EngineError``.

The calls are exactly these (``deploy/kubernetes/rbac.yaml`` grants the same):
create, list, watch, delete and merge-patch, on the kinds of :data:`KINDS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError, NotReadyError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Pod, Secret
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.types import PatchType

from gateway.errors import EngineError, EngineNotFound, RuntimeUnavailable

__all__ = ["KINDS", "Conflict", "Gone", "KubeApi"]

Sandbox = create_namespaced_resource("agents.x-k8s.io", "v1alpha1", "Sandbox", "sandboxes")
SandboxClaim = create_namespaced_resource(
    "extensions.agents.x-k8s.io", "v1alpha1", "SandboxClaim", "sandboxclaims"
)
SandboxTemplate = create_namespaced_resource(
    "extensions.agents.x-k8s.io", "v1alpha1", "SandboxTemplate", "sandboxtemplates"
)
SandboxWarmPool = create_namespaced_resource(
    "extensions.agents.x-k8s.io", "v1alpha1", "SandboxWarmPool", "sandboxwarmpools"
)

#: The kinds the runtime touches, by the name it uses for them.
KINDS: dict[str, Any] = {
    "sandboxes": Sandbox,
    "sandboxclaims": SandboxClaim,
    "sandboxtemplates": SandboxTemplate,
    "sandboxwarmpools": SandboxWarmPool,
    "pods": Pod,
    "secrets": Secret,
    "networkpolicies": NetworkPolicy,
}


class Conflict(EngineError):
    """409: the object exists already (a create), or was changed meanwhile."""


class Gone(EngineError):
    """410: the watch's resourceVersion is too old; list again."""


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except ApiError as error:
        code, message = error.status.code, error.status.message or str(error)
        if code == 404:
            raise EngineNotFound(f"{what}: {message}") from None
        if code == 409:
            raise Conflict(f"{what}: {message}") from None
        if code == 410:
            raise Gone(f"{what}: {message}") from None
        raise EngineError(f"{what}: the Kubernetes API answered {code}: {message}") from None
    except (httpx2.HTTPError, OSError, TimeoutError) as error:
        raise RuntimeUnavailable(f"the Kubernetes API does not answer ({what}): {error!r}") from None


def _dict(obj: Any) -> dict[str, Any]:
    found: dict[str, Any] = obj.to_dict()
    return found


class KubeApi:
    """One lightkube client on one namespace."""

    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    @classmethod
    def connect(cls, kubeconfig: str | None, namespace: str | None) -> KubeApi:
        """From ``kubeconfig`` (a file), else in-cluster (the pod's service account), else
        ``KUBECONFIG`` or ``~/.kube/config``; the namespace: ``namespace``, else the config's."""
        try:
            config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
            client = AsyncClient(config=config, namespace=namespace, trust_env=False)
        except (ConfigError, OSError, ValueError, KeyError) as error:
            raise RuntimeUnavailable(f"no Kubernetes configuration: {error}") from None
        return cls(client, client.namespace)

    async def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        resource = KINDS[kind]
        with _mapped(f"create {kind}/{body['metadata']['name']}"):
            return _dict(await self._client.create(resource.from_dict(body)))

    async def list(self, kind: str, labels: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        """Every object of ``kind`` with ``labels``, and the list's resourceVersion (to watch from)."""
        with _mapped(f"list {kind}"):
            found = self._client.list(KINDS[kind], labels=dict[str, Any](labels))
            items = [_dict(item) async for item in found]
            try:
                version: str | None = found.resourceVersion
            except NotReadyError:  # a list answered without a version: watch from now
                version = None
        return items, version

    async def watch(
        self, kind: str, labels: dict[str, str], version: str | None, seconds: int
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(type, object)`` events after ``version`` until the server ends the watch
        (``seconds``); raises :class:`Gone` when ``version`` is too old."""
        with _mapped(f"watch {kind}"):
            events = self._client.watch(
                KINDS[kind],
                labels=dict[str, Any](labels),
                resource_version=version,
                server_timeout=seconds,
            )
            async for event, obj in events:
                yield event, _dict(obj)

    async def delete(self, kind: str, name: str) -> bool:
        """``False`` when there was nothing to delete."""
        try:
            with _mapped(f"delete {kind}/{name}"):
                await self._client.delete(KINDS[kind], name)
        except EngineNotFound:
            return False
        return True

    async def patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386)."""
        with _mapped(f"patch {kind}/{name}"):
            return _dict(await self._client.patch(KINDS[kind], name, body, patch_type=PatchType.MERGE))

    async def create_or_patch(self, kind: str, body: dict[str, Any], patch: dict[str, Any]) -> None:
        """Create ``body``, or merge-patch ``patch`` into the object of its name that exists."""
        try:
            await self.create(kind, body)
        except Conflict:
            await self.patch(kind, body["metadata"]["name"], patch)

    async def close(self) -> None:
        with contextlib.suppress(httpx2.HTTPError, OSError):
            await self._client.close()
