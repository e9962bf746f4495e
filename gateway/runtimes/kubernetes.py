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
in :mod:`gateway.runtimes.kubernetes_pods`, states in :mod:`gateway.runtimes.kubernetes_state`,
the reads in :mod:`gateway.runtimes.kubernetes_listing`; this module writes):

- A cold conversation is a ``Sandbox`` ``convoy-<id>`` and a ``Secret`` of the
  same name (its token, mounted root-only into the pod, and its task env,
  referenced by ``secretKeyRef``: the Sandbox object holds no secret value).
- The pool: the *size* is convoy's (:mod:`gateway.pool`: ``pool_size`` /
  ``pool_sizes``, per gateway, as on every runtime). A spare is a
  ``SandboxClaim`` made ahead on the pool's ``SandboxTemplate`` (one per
  installation and template, made at the first spare; :mod:`gateway.runtimes.kubernetes_warm`),
  whose agent waits as a spare; the conversation's secrets reach it after the
  claim has bound: ``POST /claim`` (:mod:`sandbox_agent.claim`), recorded first
  in a Secret ``convoy-<id>-claim`` from which any gateway reads the claimed
  spec back, a two-step commit a restarted gateway finishes or undoes
  (:mod:`gateway.runtimes.kubernetes_claims`). Every spare of the installation
  shares one claim secret (they are made from one template), in the Secret
  ``convoy-<install>-claim``.
- What a pool costs: a pool of N is N pods by default. The claims are made
  ahead so that the bind (a controller's round trip through the API) is never
  in a user's wait, and a sandbox a claim adopts *leaves* its
  ``SandboxWarmPool``, which then makes another: with claims ahead, a warm pool
  of R replicas costs R pods more, whatever R is (a warm pool of N behind N
  spares is 2N pods). So a ``SandboxWarmPool`` is made only when
  ``kubernetes_warm_replicas`` (default 0) is set: R more pods per pool, so that a
  refill binds a running pod at once instead of starting one. With none, a
  spare's claim (``warmpool: default``) gets a sandbox made from the template:
  the refill starts a pod, as on every other runtime. (The other way to N pods,
  a warm pool of N and no claim before the create, would put the bind in every
  warm create's wait.) A pool whose size goes to 0, or that leaves the
  settings, has its warm pool (and its sandboxes) and then its template
  deleted at the next reconcile or start (:meth:`WarmPools.prune`).
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
import contextlib
import time
from typing import Any
from uuid import UUID

from gateway.errors import ClaimFailed, RuntimeFailure, RuntimeUnavailable, SandboxStartError
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes import kubernetes_pods as pods
from gateway.runtimes.base import ProgressCallback, SandboxHandle, SandboxSpec, SandboxState, wait_until_ready
from gateway.runtimes.kubernetes_api import KubeApi
from gateway.runtimes.kubernetes_listing import KubeView
from gateway.runtimes.kubernetes_orphans import left_over
from gateway.runtimes.kubernetes_state import pod_name
from gateway.settings import Settings

__all__ = ["KubernetesRuntime"]

#: Seconds past the start timeout after which an object with no complete spec is left-over.
_HALF_MADE_MARGIN = 30.0
_SYNC_TIMEOUT = 15.0


class KubernetesRuntime(KubeView):
    """The Runtime protocol on a Kubernetes namespace; build it with :meth:`connect`. What it
    reads (:meth:`find`, :meth:`list`) is :class:`~gateway.runtimes.kubernetes_listing.KubeView`'s."""

    enforces_egress = False

    @classmethod
    async def connect(cls, settings: Settings) -> KubernetesRuntime:
        """Connect, make the installation's NetworkPolicies, follow its objects, settle the claims
        a gateway died in, and delete the pools' objects no pool wants. Raises
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
            await runtime.claims.settle(runtime._spare_of)  # before the first listing adopts spares
            await runtime._prune_pools()
        except BaseException:
            await runtime.close()
            raise
        return runtime

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
        """The claim is recorded, sent to the agent, and marked delivered
        (:mod:`gateway.runtimes.kubernetes_claims`); a claim the agent refuses leaves the
        record to :meth:`remove`."""
        if self._carrier(spare.conversation_id) is None:
            raise ClaimFailed(f"the spare {spare.conversation_id} is gone")
        return await self.claims.claim(spare, spec)

    # --- removing -------------------------------------------------------------------------

    async def remove(self, conversation_id: UUID) -> bool:
        """Deletes the carrier (a claim takes its sandbox and pod along; so does a Sandbox its
        pod) and the Secrets, whatever the mirrors say: another gateway may have just made them."""
        name = objs.object_name(conversation_id)
        found = self._carrier(conversation_id)
        deleted = await asyncio.gather(
            *(self._delete(kind, name) for kind in self._kinds()),
            self._delete("secrets", name),
            self._delete("secrets", objs.claim_record_name(conversation_id)),
        )
        if found is not None and found[0] == "sandboxclaims":
            adopted = pod_name("sandboxclaims", found[1])  # the claim's sandbox: its name is its pod's
            if adopted:
                await self._delete("sandboxes", adopted)
        self._ended.pop(conversation_id, None)
        self.claims.forget(conversation_id)
        return any(deleted)

    async def _delete(self, kind: str, name: str) -> bool:
        if kind in self.mirrors:
            self.mirrors[kind].forget(name)
        return await self._api.delete(kind, name)

    async def _quietly_remove(self, conversation_id: UUID) -> None:
        with contextlib.suppress(RuntimeFailure):  # cleanup_orphans retries
            await self.remove(conversation_id)

    async def cleanup_orphans(self) -> int:
        """Abandoned claims finished or undone (:meth:`ClaimRecords.settle`: an undone one is a
        spare again, for the pool); EXITED sandboxes; carriers with no readable spec and
        conversation Secrets with no carrier, once older than any start may take (another
        gateway may be making them); the pools' objects no pool wants."""
        await self.claims.settle(self._spare_of)
        removed = 0
        handles = {handle.conversation_id: handle for handle in await self.list()}
        for conversation_id, handle in handles.items():
            if handle.state is SandboxState.EXITED and conversation_id not in self._starting:
                removed += await self.remove(conversation_id)
        found = [obj for kind in [*self._kinds(), "secrets"] for obj in self.mirrors[kind].items.values()]
        carried = {obj["metadata"]["labels"][objs.CONVERSATION_ID] for _, obj in self._carriers()}
        cutoff = self._settings.start_timeout + _HALF_MADE_MARGIN
        kept = set(handles) | self._starting | self.claims.hidden()
        for conversation_id in left_over(found, kept, carried, cutoff):
            removed += await self.remove(conversation_id)
        return removed + await self._prune_pools()

    async def _prune_pools(self) -> int:
        if self._pods_mode:
            return 0
        return await self.pools.prune(self.mirrors["sandboxclaims"].items.values())

    async def close(self) -> None:
        """The watches and the HTTP clients; the sandboxes keep running. The warm pools no spare
        claims from any more go (:meth:`WarmPools.close`: the gateway's spares were removed first)."""
        if not self._pods_mode and all(mirror.live for mirror in self.mirrors.values()):
            with contextlib.suppress(RuntimeFailure):
                await self.pools.close(self._spare_claims())
        await asyncio.gather(*(mirror.close() for mirror in self.mirrors.values()))
        await self.claims.close()
        await self._api.close()

    def _spare_claims(self) -> list[dict[str, Any]]:
        """The installation's SandboxClaims that are spares no claim was recorded for."""
        return [
            obj
            for kind, obj in self._carriers()
            if kind == "sandboxclaims"
            and (handle := self._handle(kind, obj)) is not None
            and handle.spec.pool is not None
        ]
