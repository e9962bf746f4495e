"""What the Kubernetes runtime reads: its mirrors of the API, and the handles they make.

:class:`KubeView` holds the runtime's state (the watched mirrors, the claim
records, the pools' objects) and answers :meth:`find` and :meth:`list` from the
mirrors alone (listing for real only where a watch is down: what another gateway
did shows once its watch event has arrived, a moment later); the runtime
(:mod:`gateway.runtimes.kubernetes`) adds what writes. A conversation is
carried by a SandboxClaim (a spare, claimed or not), a Sandbox (cold) or, in the
``pods`` mode, a Pod; its spec is the carrier's annotation with its Secrets'
values, and a claimed spare's is the claim record's (see
:mod:`gateway.runtimes.kubernetes_claims`: one whose claim is pending is hidden).
"""

from __future__ import annotations

import builtins
from typing import Any
from uuid import UUID

from gateway.pool import pool_sizes
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes.base import ResourceLimits, SandboxHandle, SandboxState
from gateway.runtimes.kubernetes_api import KubeApi
from gateway.runtimes.kubernetes_claims import ClaimRecords
from gateway.runtimes.kubernetes_orphans import WithoutLifecycle
from gateway.runtimes.kubernetes_state import Observed, observe, pod_name
from gateway.runtimes.kubernetes_warm import WarmPools
from gateway.runtimes.kubernetes_watch import Changes, Mirror, gone
from gateway.runtimes.template_catalog import DefaultTemplateOnly
from gateway.settings import Settings


class KubeView(WithoutLifecycle):
    """The runtime's state and its reads (see the module docstring)."""

    name = "kubernetes"

    def __init__(self, settings: Settings, api: KubeApi) -> None:
        self._settings = settings
        self._api = api
        self._pods_mode = settings.kubernetes_mode == "pods"
        self.policy = objs.PodPolicy(
            install=settings.install,
            namespace=api.namespace,
            image=settings.kubernetes_image,
            image_pull_policy=settings.kubernetes_image_pull_policy,
            user=settings.docker_user,
            default_limits=ResourceLimits(settings.kubernetes_memory, settings.kubernetes_cpus, None),
            tmpfs_bytes=settings.docker_tmpfs_bytes,
            node_lost_after=settings.kubernetes_node_lost_after,
            gateway_labels=dict(part.split("=", 1) for part in settings.kubernetes_gateway_labels.split(",")),
        )
        self.changes = Changes()
        labels = {objs.INSTALL: settings.install}
        kinds = ["pods", "secrets"] if self._pods_mode else ["sandboxes", "sandboxclaims", "pods", "secrets"]
        self.mirrors = {kind: Mirror(api, kind, labels, self.changes) for kind in kinds}
        self.claims = ClaimRecords(api, self.policy, self.mirrors["secrets"])
        self._templates = DefaultTemplateOnly("kubernetes", f"the sandbox image {settings.kubernetes_image}")
        self._starting: set[UUID] = set()
        self._ended: dict[UUID, Observed] = {}  # EXITED once seen stays so (a lost node's pod)
        sizes = pool_sizes(settings, self.name)
        self.pools = WarmPools(
            api, self.policy, self.mirrors["secrets"], sizes, settings.kubernetes_warm_replicas
        )

    def _kinds(self) -> list[str]:
        """The kinds that carry a conversation, the first found winning."""
        return ["pods"] if self._pods_mode else ["sandboxclaims", "sandboxes"]

    def _carriers(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (kind, obj)
            for kind in self._kinds()
            for obj in self.mirrors[kind].items.values()
            if not gone(obj) and (obj["metadata"].get("labels") or {}).get(objs.CONVERSATION_ID)
        ]

    def _carrier(self, conversation_id: UUID) -> tuple[str, dict[str, Any]] | None:
        name = objs.object_name(conversation_id)
        for kind in self._kinds():
            found = self.mirrors[kind].get(name)
            if found is not None:
                return kind, found
        return None

    def _secrets_of(self, conversation_id: UUID, claimed: bool) -> dict[str, str]:
        """The decoded data of the conversation's Secrets (token and env; the claim, if ``claimed``)."""
        data = objs.decoded(self.mirrors["secrets"].get(objs.object_name(conversation_id)))
        if not claimed:
            return data
        return data | objs.decoded(self.mirrors["secrets"].get(objs.claim_record_name(conversation_id)))

    def _handle(self, kind: str, obj: dict[str, Any], claimed: bool = True) -> SandboxHandle | None:
        """The handle of the carrier ``obj``; ``claimed`` False: a spare's as if it had no claim.
        ``None`` when its spec cannot be read, or its claim is pending (see the module docstring)."""
        labels = obj["metadata"].get("labels") or {}
        spare = labels.get(objs.ROLE) == "spare"
        try:
            conversation_id = UUID(labels[objs.CONVERSATION_ID])
        except ValueError:
            return None
        if claimed and self.claims.pending(conversation_id):
            return None
        spec = objs.spec_of(
            obj, self.pools.claim_token() if spare else None, self._secrets_of(conversation_id, claimed)
        )
        if spec is None:
            return None
        # A pod being deleted still says why (an evicted one: its lost node), so it is looked at.
        pod = self.mirrors["pods"].items.get(pod_name(kind, obj) or "") if kind != "pods" else obj
        seen = observe(kind, obj, pod, self._settings.start_timeout)
        if seen.state is SandboxState.EXITED:
            self._ended.setdefault(spec.conversation_id, seen)
        seen = self._ended.get(spec.conversation_id, seen)
        return SandboxHandle(spec, seen.base_url, seen.state, seen.exit_code, seen.oom_killed, seen.reason)

    def _spare_of(self, conversation_id: UUID) -> SandboxHandle | None:
        """The sandbox of a claimed spare as the spare it was (its claim left aside)."""
        found = self._carrier(conversation_id)
        return None if found is None else self._handle(*found, claimed=False)

    async def _fresh(self) -> None:
        """Make sure the mirrors are live; list for real where one is not (RuntimeUnavailable)."""
        for mirror in self.mirrors.values():
            if not mirror.live:
                await mirror.refresh()

    async def find(self, conversation_id: UUID) -> SandboxHandle | None:
        await self._fresh()
        found = self._carrier(conversation_id)
        return None if found is None else self._handle(*found)

    async def list(self) -> builtins.list[SandboxHandle]:
        await self._fresh()
        carriers = self._carriers()
        handles = [handle for handle in (self._handle(kind, obj) for kind, obj in carriers) if handle]
        listed = {handle.conversation_id for handle in handles} | self.claims.hidden()
        for gone_id in [key for key in self._ended if key not in listed]:  # removed elsewhere
            del self._ended[gone_id]
        return handles
