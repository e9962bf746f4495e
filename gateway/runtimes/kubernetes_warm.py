"""The pools' objects on Kubernetes: the installation's claim secret, and per template a
``SandboxTemplate`` and, only with ``kubernetes_warm_replicas`` > 0, a ``SandboxWarmPool``
(see :mod:`gateway.runtimes.kubernetes` for what each costs in pods).

They are the installation's, shared by all its gateways: made at the first spare of a
template by whichever gateway comes first (a 409 means another made it, whose object is
then brought in line). :meth:`WarmPools.prune` (at connect and every reconcile) deletes
what no pool of the settings wants any more - the warm pool of a template whose pool is
gone (size 0, or not in the settings), with the warm sandboxes it owns, and its
``SandboxTemplate`` once no ``SandboxClaim`` names it. (The claim secret stays: it is the
installation's, not a pool's, and a spare of another gateway may be mounting it.)
:meth:`WarmPools.close` (a gateway's shutdown, after its spares
were removed) deletes the warm pools no spare of any gateway claims from any more.
The gateways of one installation are meant to share their pool settings: one whose
settings lack a pool prunes the others' (they make it again, see :meth:`WarmPools.prune`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from typing import Any

from gateway.errors import SandboxStartError
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes import kubernetes_pods as pods
from gateway.runtimes.kubernetes_api import Conflict, KubeApi
from gateway.runtimes.kubernetes_watch import Mirror


class WarmPools:
    """Makes and removes the pools' objects. ``sizes``: the spares kept per template (a
    template of size 0 has no pool); ``replicas``: the warm sandboxes each pool's
    SandboxWarmPool keeps behind its spares (0: no SandboxWarmPool at all)."""

    def __init__(
        self,
        api: KubeApi,
        policy: objs.PodPolicy,
        secrets_mirror: Mirror,
        sizes: dict[str, int],
        replicas: int,
    ) -> None:
        self._api, self._policy, self._secrets = api, policy, secrets_mirror
        self._wanted = {objs.pool_name(policy.install, key): key for key, size in sizes.items() if size}
        self.replicas = replicas
        self._locks: dict[str, asyncio.Lock] = {}
        self._made: set[str] = set()
        self._token: str | None = None

    def claim_token(self) -> str | None:
        """The claim secret every warm pool sandbox of the installation starts with (once known)."""
        if self._token is None:
            found = self._secrets.get(objs.claim_secret_name(self._policy.install))
            self._token = objs.decoded(found).get("token") if found else None
        return self._token

    async def ready(self, template: str) -> None:
        """Make sure the claim secret and the SandboxTemplate (and SandboxWarmPool) of ``template`` exist."""
        if template in self._made:
            return
        async with self._locks.setdefault(template, asyncio.Lock()):
            if template in self._made:
                return
            if self.claim_token() is None:
                secret = objs.claim_secret(self._policy, secrets.token_urlsafe(32))
                try:
                    self._secrets.put(await self._api.create("secrets", secret))
                except Conflict:  # another gateway made it: read it
                    await self._secrets.refresh()
                if self.claim_token() is None:
                    raise SandboxStartError("the installation's claim secret cannot be read")
            body = pods.sandbox_template(self._policy, template)
            await self._api.create_or_patch("sandboxtemplates", body, {"spec": body["spec"]})
            if self.replicas:
                pool = pods.warm_pool(self._policy, template, self.replicas)
                await self._api.create_or_patch(
                    "sandboxwarmpools", pool, {"spec": {"replicas": self.replicas}}
                )
            self._made.add(template)

    async def prune(self, claims: Iterable[dict[str, Any]]) -> int:
        """Deletes the pool objects no pool wants (see the module docstring); ``claims``: the
        installation's SandboxClaims. Returns how many objects went."""
        named = {_template_of(claim) for claim in claims}
        removed = 0
        labels = {objs.INSTALL: self._policy.install}
        warm, _ = await self._api.list("sandboxwarmpools", labels)
        for pool in warm:
            name = pool["metadata"]["name"]
            if name not in self._wanted or not self.replicas:
                removed += await self._api.delete("sandboxwarmpools", name)
        templates, _ = await self._api.list("sandboxtemplates", labels)
        for template in templates:
            name = template["metadata"]["name"]
            if name not in self._wanted and name not in named:
                removed += await self._api.delete("sandboxtemplates", name)
        # What another gateway pruned is made again at this gateway's next spare.
        present = {obj["metadata"]["name"] for obj in templates} & (
            {obj["metadata"]["name"] for obj in warm} if self.replicas else set(self._wanted)
        )
        self._made = {key for key in self._made if objs.pool_name(self._policy.install, key) in present}
        return removed

    async def close(self, spare_claims: Iterable[dict[str, Any]]) -> None:
        """Deletes the warm pools of this gateway's templates that no spare (``spare_claims``:
        the installation's unclaimed spares, of every gateway) claims from any more."""
        if not self.replicas:
            return
        used = {_template_of(claim) for claim in spare_claims}
        for key in sorted(self._made):
            name = objs.pool_name(self._policy.install, key)
            if name not in used:
                await self._api.delete("sandboxwarmpools", name)
        self._made.clear()


def _template_of(claim: dict[str, Any]) -> str | None:
    """The SandboxTemplate a SandboxClaim names."""
    found = ((claim.get("spec") or {}).get("sandboxTemplateRef") or {}).get("name")
    return str(found) if found else None
