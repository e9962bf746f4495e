"""The pools' objects on Kubernetes: the installation's claim secret, and per template a
``SandboxTemplate`` and its ``SandboxWarmPool`` (see :mod:`gateway.runtimes.kubernetes`).

They are made at the first spare of a template (by whichever gateway comes first: a 409
means another made it, whose object is then brought in line), and never removed by a
gateway: they are the installation's, shared by all its gateways.
"""

from __future__ import annotations

import asyncio
import secrets

from gateway.errors import SandboxStartError
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes import kubernetes_pods as pods
from gateway.runtimes.kubernetes_api import Conflict, KubeApi
from gateway.runtimes.kubernetes_watch import Mirror


class WarmPools:
    """Makes the pools' objects; ``replicas``: the warm sandboxes each template's SandboxWarmPool keeps."""

    def __init__(
        self, api: KubeApi, policy: objs.PodPolicy, secrets_mirror: Mirror, replicas: dict[str, int]
    ) -> None:
        self._api, self._policy, self._secrets = api, policy, secrets_mirror
        self._replicas = replicas
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
        """Make sure the claim secret, the SandboxTemplate and the SandboxWarmPool of ``template`` exist."""
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
            replicas = self._replicas.get(template, 0)
            pool = pods.warm_pool(self._policy, template, replicas)
            await self._api.create_or_patch("sandboxwarmpools", pool, {"spec": {"replicas": replicas}})
            self._made.add(template)
