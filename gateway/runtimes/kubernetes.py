"""KubernetesRuntime: one hardened pod per conversation, on the Kubernetes SIG agent-sandbox API.

What the runtime relies on of that API (read from its Go types,
kubernetes-sigs/agent-sandbox ``api/v1alpha1`` and ``extensions/api/v1alpha1``):

- ``Sandbox`` (group ``agents.x-k8s.io``, version ``v1alpha1``, plural
  ``sandboxes``): ``spec.podTemplate`` holds a pod's ``spec`` and
  ``metadata`` (labels and annotations only); ``spec.replicas`` is 1 (run) or 0
  (suspend: the pod is deleted, so memory is lost - hence no pause here). The
  controller runs one pod; ``status.podIPs`` are its addresses, and the
  ``Ready`` condition turns True only once that pod runs, is Ready and has an
  IP; ``Finished`` turns True (reasons PodSucceeded/PodFailed) when it ended.
  A pod adopted from a warm pool is named by the annotation ``agents.x-k8s.io/pod-name``.
- ``SandboxTemplate`` (group ``extensions.agents.x-k8s.io``, ``v1alpha1``):
  ``spec.podTemplate`` as above, ``spec.networkPolicyManagement`` (Managed,
  the default, makes a shared policy; Unmanaged none: the installation's own
  NetworkPolicies apply), ``spec.envVarsInjectionPolicy`` (Disallowed by default).
- ``SandboxWarmPool``: ``spec.replicas`` ready sandboxes of
  ``spec.sandboxTemplateRef.name``; a claimed one leaves the pool, which refills.
- ``SandboxClaim``: ``spec.sandboxTemplateRef.name`` and ``spec.warmpool``
  ("none", "default" or a pool's name) - it adopts a ready sandbox of that pool
  (the controller picks which), or makes a fresh one from the template;
  ``status.sandbox.name`` names it, ``status.sandbox.podIPs`` its addresses,
  the ``Ready`` condition mirrors it. ``spec.env`` would force a cold start
  (env cannot be put into a running pod), so the runtime never sets it.
  Deleting a claim deletes its sandbox (the claim owns it once adopted).

How convoy maps onto it (``kubernetes_mode=sandboxes``, the default; objects
in :mod:`gateway.runtimes.kubernetes_pods`, states in :mod:`gateway.runtimes.kubernetes_state`):

- A cold conversation is a ``Sandbox`` ``convoy-<id>`` and a ``Secret`` of the
  same name (its token, mounted root-only into the pod, and its task env,
  referenced by ``secretKeyRef``: the Sandbox object holds no secret value).
- The pool: the *size* is convoy's (:mod:`gateway.pool`: ``pool_size`` /
  ``pool_sizes``, per gateway, as on every runtime). A spare is a
  ``SandboxClaim`` made ahead on the pool's ``SandboxWarmPool`` (one
  ``SandboxTemplate`` + ``SandboxWarmPool`` per installation and template,
  made at the first spare), so the spare *is* a warm pool's sandbox, whose
  agent waits as a spare; the warm pool keeps ``kubernetes_warm_replicas``
  (default: the pool's size) more behind them, so a refill binds at once
  instead of starting a pod. The conversation's secrets reach the agent after
  the claim has bound: ``POST /claim`` (:mod:`sandbox_agent.claim`). Before
  that, the claim is written to a Secret ``convoy-<id>-claim`` (created, never
  replaced: another gateway's create of the same answers 409, so the spare was
  taken), from which any gateway reads the claimed spec back. Every spare of
  the installation shares one claim secret (the warm pool's pods are made from
  one template), in the Secret ``convoy-<install>-claim``.
- Labels (``convoy.install``, ``convoy.conversation-id``, ``convoy.role``) are
  the registry: a restarted gateway lists them; the rest of the spec is the
  ``convoy.spec`` annotation (owner and title are no label values).
- Network: two NetworkPolicies per installation select every sandbox pod:
  ingress from the gateway's pods (``kubernetes_gateway_labels``) to the agent
  port only, no egress; pods of conversations with internet may also reach
  public addresses (not the cluster's, nor cloud metadata) and DNS.
  Egress allow-lists are not enforced here (``enforces_egress`` is False).
- State comes from watches (:mod:`gateway.runtimes.kubernetes_watch`), never polling.
- A node lost: its pods get ``NodeLost`` / ``DisruptionTarget`` (after
  ``kubernetes_node_lost_after`` seconds, the pods' toleration): EXITED, the
  reason naming the node; once seen, the runtime keeps it EXITED, and a pod
  the Sandbox controller makes later in the lost one's place (made longer
  after its Sandbox than any start may take) is EXITED for every gateway, a
  restarted one too: a workspace is never moved silently.

Not supported here: pause/resume, snapshots and forks (an emptyDir workspace
dies with its pod), templates other than the default (images come from a
registry the nodes pull from), usage figures (no metrics API is read).
``kubernetes_mode=pods`` (clusters without the CRDs): each sandbox, spares included, is a
plain ``Pod`` ``convoy-<id>`` with the same spec and its own Secret (a spare's holds its own
claim secret); the pool is convoy's alone, claimed the same way.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from typing import Any
from uuid import UUID

from gateway.errors import ClaimFailed, RuntimeFailure, RuntimeUnavailable, SandboxStartError, SpareTaken
from gateway.pool import pool_sizes
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes import kubernetes_pods as pods
from gateway.runtimes.base import (
    ProgressCallback,
    ResourceLimits,
    SandboxHandle,
    SandboxSpec,
    SandboxState,
    wait_until_ready,
)
from gateway.runtimes.claiming import Claimer, claim_of
from gateway.runtimes.kubernetes_api import Conflict, KubeApi
from gateway.runtimes.kubernetes_orphans import WithoutLifecycle, left_over
from gateway.runtimes.kubernetes_state import Observed, observe, pod_name
from gateway.runtimes.kubernetes_warm import WarmPools
from gateway.runtimes.kubernetes_watch import Changes, Mirror, gone
from gateway.runtimes.template_catalog import DefaultTemplateOnly
from gateway.settings import Settings

__all__ = ["KubernetesRuntime"]

#: Seconds past the start timeout after which an object with no complete spec is left-over.
_HALF_MADE_MARGIN = 30.0
_SYNC_TIMEOUT = 15.0


class KubernetesRuntime(WithoutLifecycle):
    """The Runtime protocol on a Kubernetes namespace; build it with :meth:`connect`."""

    name = "kubernetes"
    enforces_egress = False

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
        self._claimer = Claimer()
        self._templates = DefaultTemplateOnly("kubernetes", f"the sandbox image {settings.kubernetes_image}")
        self._starting: set[UUID] = set()
        self._ended: dict[UUID, Observed] = {}  # EXITED once seen stays so (a lost node's pod)
        replicas = settings.kubernetes_warm_replicas
        sizes = pool_sizes(settings, self.name)
        warm = {template: size if replicas is None else replicas for template, size in sizes.items()}
        self.pools = WarmPools(api, self.policy, self.mirrors["secrets"], warm)

    @classmethod
    async def connect(cls, settings: Settings) -> KubernetesRuntime:
        """Connect, make the installation's NetworkPolicies, and follow its objects. Raises
        :class:`RuntimeUnavailable` when the API does not answer within a few seconds."""
        api = KubeApi.connect(settings.kubernetes_kubeconfig, settings.kubernetes_namespace)
        runtime = cls(settings, api)
        try:
            for policy in pods.network_policies(runtime.policy):
                await api.create_or_patch("networkpolicies", policy, {"spec": policy["spec"]})
            for mirror in runtime.mirrors.values():
                mirror.start()
            for mirror in runtime.mirrors.values():
                if not await mirror.synced(_SYNC_TIMEOUT):
                    raise RuntimeUnavailable(
                        f"the Kubernetes API did not list {mirror.kind} within {_SYNC_TIMEOUT:g}s"
                        + (f": {mirror.error}" if mirror.error else "")
                    )
        except BaseException:
            await runtime.close()
            raise
        return runtime

    # --- what the API holds -----------------------------------------------------------

    def _carriers(self) -> list[tuple[str, dict[str, Any]]]:
        kinds = ["pods"] if self._pods_mode else ["sandboxclaims", "sandboxes"]
        return [
            (kind, obj)
            for kind in kinds
            for obj in self.mirrors[kind].items.values()
            if not gone(obj) and (obj["metadata"].get("labels") or {}).get(objs.CONVERSATION_ID)
        ]

    def _carrier(self, conversation_id: UUID) -> tuple[str, dict[str, Any]] | None:
        name = objs.object_name(conversation_id)
        for kind in ["pods"] if self._pods_mode else ["sandboxclaims", "sandboxes"]:
            found = self.mirrors[kind].get(name)
            if found is not None:
                return kind, found
        return None

    def _secrets_of(self, conversation_id: UUID) -> dict[str, str]:
        """The decoded data of the conversation's Secrets (token and env; the claim)."""
        name = objs.object_name(conversation_id)
        data = objs.decoded(self.mirrors["secrets"].get(name))
        return data | objs.decoded(self.mirrors["secrets"].get(f"{name}-claim"))

    def _handle(self, kind: str, obj: dict[str, Any]) -> SandboxHandle | None:
        labels = obj["metadata"].get("labels") or {}
        spare = labels.get(objs.ROLE) == "spare"
        try:
            data = self._secrets_of(UUID(labels[objs.CONVERSATION_ID]))
        except ValueError:
            return None
        spec = objs.spec_of(obj, self.pools.claim_token() if spare else None, data)
        if spec is None:
            return None
        # A pod being deleted still says why (an evicted one: its lost node), so it is looked at.
        pod = self.mirrors["pods"].items.get(pod_name(kind, obj) or "") if kind != "pods" else obj
        seen = observe(kind, obj, pod, self._settings.start_timeout)
        if seen.state is SandboxState.EXITED:
            self._ended.setdefault(spec.conversation_id, seen)
        seen = self._ended.get(spec.conversation_id, seen)
        return SandboxHandle(spec, seen.base_url, seen.state, seen.exit_code, seen.oom_killed, seen.reason)

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
        listed = {handle.conversation_id for handle in handles}
        for gone_id in [key for key in self._ended if key not in listed]:  # removed elsewhere
            del self._ended[gone_id]
        return handles

    # --- starting ---------------------------------------------------------------------

    async def start(self, spec: SandboxSpec, progress: ProgressCallback | None = None) -> SandboxHandle:
        if spec.egress is not None:
            raise SandboxStartError("the kubernetes runtime cannot enforce an egress allow-list")
        if spec.template != "default":
            raise SandboxStartError(
                f"no template {spec.template!r}: the kubernetes runtime has only 'default'"
            )
        self._starting.add(spec.conversation_id)
        try:
            await self._create(spec, progress)
            if progress:
                await progress("waiting for agent")
            return await self._wait(spec.conversation_id, time.monotonic() + self._settings.start_timeout)
        except BaseException as error:
            await asyncio.shield(self._quietly_remove(spec.conversation_id))
            if isinstance(error, RuntimeFailure) and not isinstance(error, SandboxStartError):
                raise SandboxStartError(f"the sandbox could not be started: {error}") from None
            raise
        finally:
            self._starting.discard(spec.conversation_id)

    async def _create(self, spec: SandboxSpec, progress: ProgressCallback | None) -> None:
        if spec.pool is not None and not self._pods_mode:
            await self.pools.ready(spec.pool)
            if progress:
                await progress("claiming a warm sandbox")
            self.mirrors["sandboxclaims"].put(
                await self._api.create("sandboxclaims", pods.sandbox_claim(self.policy, spec))
            )
            return
        if progress:
            await progress("creating secret")
        self.mirrors["secrets"].put(
            await self._api.create("secrets", objs.conversation_secret(self.policy, spec))
        )
        if progress:
            await progress("creating pod" if self._pods_mode else "creating sandbox")
        if self._pods_mode:
            self.mirrors["pods"].put(await self._api.create("pods", pods.pod(self.policy, spec)))
        else:
            self.mirrors["sandboxes"].put(
                await self._api.create("sandboxes", pods.sandbox(self.policy, spec))
            )

    async def _wait(self, conversation_id: UUID, deadline: float) -> SandboxHandle:
        """Until the sandbox is RUNNING and its agent answers; SandboxStartError when it ends first."""
        while True:
            found = self._carrier(conversation_id)
            handle = None if found is None else self._handle(*found)
            if handle is not None and handle.state is SandboxState.RUNNING:
                await wait_until_ready(handle.base_url, within=max(1.0, deadline - time.monotonic()))
                return handle
            if handle is not None and handle.state is SandboxState.EXITED:
                raise SandboxStartError(handle.reason or "the sandbox ended before its agent was ready")
            if found is None and not all(mirror.live for mirror in self.mirrors.values()):
                await self._fresh()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxStartError(f"the sandbox was not ready within {self._settings.start_timeout:g}s")
            await self.changes.wait(min(remaining, 5.0))

    # --- claiming a spare ---------------------------------------------------------------

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """The claim is written to its Secret first (409: another gateway took the spare), then
        sent to the agent; a claim the agent refuses leaves the Secret to :meth:`remove`."""
        if self._carrier(spare.conversation_id) is None:
            raise ClaimFailed(f"the spare {spare.conversation_id} is gone")
        body = objs.claim_record(self.policy, spec, claim_of(spec))
        try:
            self.mirrors["secrets"].put(await self._api.create("secrets", body))
        except Conflict:
            raise SpareTaken(f"sandbox {spare.conversation_id} was claimed already") from None
        except RuntimeFailure as error:
            raise ClaimFailed(f"the claim could not be recorded: {error}") from None
        return await self._claimer.claim(spare, spec)

    # --- removing -------------------------------------------------------------------------

    async def remove(self, conversation_id: UUID) -> bool:
        """Deletes the carrier (a claim takes its sandbox and pod along; so does a Sandbox its
        pod) and the Secrets, whatever the mirrors say: another gateway may have just made them."""
        name = objs.object_name(conversation_id)
        found = self._carrier(conversation_id)
        kinds = ["pods"] if self._pods_mode else ["sandboxclaims", "sandboxes"]
        deleted = await asyncio.gather(
            *(self._delete(kind, name) for kind in kinds),
            self._delete("secrets", name),
            self._delete("secrets", f"{name}-claim"),
        )
        if found is not None and found[0] == "sandboxclaims":
            adopted = pod_name("sandboxclaims", found[1])  # the claim's sandbox: its name is its pod's
            if adopted:
                await self._delete("sandboxes", adopted)
        self._ended.pop(conversation_id, None)
        return any(deleted)

    async def _delete(self, kind: str, name: str) -> bool:
        if kind in self.mirrors:
            self.mirrors[kind].forget(name)
        return await self._api.delete(kind, name)

    async def _quietly_remove(self, conversation_id: UUID) -> None:
        with contextlib.suppress(RuntimeFailure):  # cleanup_orphans retries
            await self.remove(conversation_id)

    async def cleanup_orphans(self) -> int:
        """EXITED sandboxes; carriers with no readable spec and conversation Secrets with no
        carrier, once older than any start may take (another gateway may be making them)."""
        removed = 0
        handles = {handle.conversation_id: handle for handle in await self.list()}
        for conversation_id, handle in handles.items():
            if handle.state is SandboxState.EXITED and conversation_id not in self._starting:
                removed += await self.remove(conversation_id)
        kinds = ["pods"] if self._pods_mode else ["sandboxclaims", "sandboxes"]
        found = [obj for kind in [*kinds, "secrets"] for obj in self.mirrors[kind].items.values()]
        carried = {obj["metadata"]["labels"][objs.CONVERSATION_ID] for _, obj in self._carriers()}
        cutoff = self._settings.start_timeout + _HALF_MADE_MARGIN
        for conversation_id in left_over(found, set(handles) | self._starting, carried, cutoff):
            removed += await self.remove(conversation_id)
        return removed

    async def close(self) -> None:
        """The watches and the HTTP clients; the sandboxes keep running."""
        await asyncio.gather(*(mirror.close() for mirror in self.mirrors.values()))
        await self._claimer.close()
        await self._api.close()
