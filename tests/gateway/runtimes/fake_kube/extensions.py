"""The simulated agent-sandbox extensions controller: warm pools and claims.

As the API documents them (extensions/api/v1alpha1):

- a ``SandboxWarmPool`` keeps ``spec.replicas`` Sandboxes of its
  ``SandboxTemplate`` that no claim holds: named ``<pool>-xxxxx``, owned by the
  pool, labelled ``agents.x-k8s.io/warm-pool-sandbox`` (a hash of the pool's
  name; ``status.selector``), ``status.replicas``/``readyReplicas``;
- a ``SandboxClaim`` binds one Sandbox: with ``spec.warmpool`` "default" (or
  unset) one of any pool of its template, a pool's name: one of that pool,
  "none", or any ``spec.env``: a fresh one (cold start) named like the claim,
  with the env put into the container (refused, Ready False
  EnvVarsInjectionRejected, when the template's ``envVarsInjectionPolicy`` is
  Disallowed). Adopting moves the Sandbox's controller reference to the claim
  (the pool then refills), labels it and its Pod with the claim's uid
  (``agents.x-k8s.io/claim-uid``) and the claim's ``additionalPodMetadata``.
  The claim's status names it (``status.sandbox.name``, with its ``podIPs``)
  and mirrors its ``Ready`` condition; the claim's annotation
  ``agents.x-k8s.io/sandbox-name`` names it too. Ready False TemplateNotFound /
  WarmPoolNotFound when what it names is missing. Deleting the claim deletes
  its Sandbox (owner reference) and so its Pod.
"""

from __future__ import annotations

import copy

from fake_kube.pod_status import PODS
from fake_kube.reconciler import Key, Reconciler, condition, controller_of, name_hash, owner_reference
from fake_kube.resources import BY_KIND
from fake_kube.sandboxes import SANDBOXES
from fake_kube.store import Event, Obj, Store

POOLS, CLAIMS, TEMPLATES = BY_KIND["SandboxWarmPool"], BY_KIND["SandboxClaim"], BY_KIND["SandboxTemplate"]
POOL_LABEL = "agents.x-k8s.io/warm-pool-sandbox"
TEMPLATE_HASH_LABEL = "agents.x-k8s.io/sandbox-template-ref-hash"
CLAIM_UID_LABEL = "agents.x-k8s.io/claim-uid"
SANDBOX_NAME_ANNOTATION = "agents.x-k8s.io/sandbox-name"


def _is_ready(obj: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def sandbox_spec(template: Obj, labels: dict[str, str], env: list[Obj] | None = None) -> Obj:
    """A Sandbox's spec from a SandboxTemplate's, with ``labels`` on its pods and ``env`` in them."""
    spec = copy.deepcopy(template["spec"])
    pod_template = spec["podTemplate"]
    metadata = pod_template.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    pod_template["spec"].setdefault("automountServiceAccountToken", False)
    for item in env or []:
        containers = pod_template["spec"]["containers"]
        target = next((c for c in containers if c["name"] == item.get("containerName")), containers[0])
        target["env"] = [e for e in target.get("env") or [] if e["name"] != item["name"]]
        target["env"].append({"name": item["name"], "value": item["value"]})
    result: Obj = {"podTemplate": pod_template}
    for field in ("volumeClaimTemplates", "service"):
        if field in spec:
            result[field] = spec[field]
    return result


class ExtensionsController:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconciler = Reconciler(store, self._route, self._reconcile)

    def _route(self, event: Event) -> list[Key]:
        name, namespace = event.object["metadata"]["name"], event.namespace
        if event.resource in (POOLS, CLAIMS):
            return [(event.resource.kind, namespace, name)]
        if event.resource == TEMPLATES:
            return [
                ("SandboxWarmPool", namespace, pool["metadata"]["name"])
                for pool in self.store.select(POOLS, namespace)
                if pool["spec"]["sandboxTemplateRef"]["name"] == name
            ]
        if event.resource == SANDBOXES:
            owners = [controller_of(obj) for obj in (event.object, event.previous) if obj is not None]
            return [
                (owner["kind"], namespace, owner["name"])
                for owner in owners
                if owner is not None and owner.get("kind") in ("SandboxWarmPool", "SandboxClaim")
            ]
        return []

    def _reconcile(self, key: Key) -> None:
        kind, namespace, name = key
        if kind == "SandboxWarmPool":
            self._pool(namespace, name)
        else:
            self._claim(namespace, name)

    def _owned(self, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        return [
            sandbox
            for sandbox in self.store.select(SANDBOXES, owner["metadata"]["namespace"])
            if (controller_of(sandbox) or {}).get("uid") == uid
        ]

    # --- warm pools ---------------------------------------------------------------
    def _pool(self, namespace: str, name: str) -> None:
        pool = self.store.find(POOLS, namespace, name)
        if pool is None:
            return
        template_name = pool["spec"]["sandboxTemplateRef"]["name"]
        template = self.store.find(TEMPLATES, namespace, template_name)
        owned = self._owned(pool)
        if template is not None:
            labels = {POOL_LABEL: name_hash(name), TEMPLATE_HASH_LABEL: name_hash(template_name)}
            for _ in range(pool["spec"]["replicas"] - len(owned)):
                owned.append(
                    self.store.create(
                        SANDBOXES,
                        namespace,
                        {
                            "metadata": {
                                "generateName": f"{name}-",
                                "labels": labels,
                                "ownerReferences": [owner_reference(pool)],
                            },
                            "spec": sandbox_spec(template, labels),
                        },
                    )
                )
        # Extra ones go, the unready and the youngest first.
        extra = sorted(owned, key=lambda s: (_is_ready(s), s["metadata"]["creationTimestamp"]))
        for sandbox in extra[: max(0, len(owned) - pool["spec"]["replicas"])]:
            self.store.delete(SANDBOXES, namespace, sandbox["metadata"]["name"])
            owned.remove(sandbox)
        status = {
            "replicas": len(owned),
            "readyReplicas": sum(map(_is_ready, owned)),
            "selector": f"{POOL_LABEL}={name_hash(name)}",
        }
        self.store.update(POOLS, namespace, name, {**pool, "status": status}, "status")

    # --- claims -------------------------------------------------------------------
    def _claim(self, namespace: str, name: str) -> None:
        claim = self.store.find(CLAIMS, namespace, name)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            return
        bound = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
        sandbox = self.store.find(SANDBOXES, namespace, bound) if bound else self._bind(claim)
        claim = self.store.find(CLAIMS, namespace, name)  # _bind may have annotated it
        if sandbox is None or claim is None:
            return  # _bind wrote why
        old = (claim.get("status") or {}).get("conditions") or []
        generation = claim["metadata"].get("generation", 1)
        ready = next(
            (c for c in (sandbox.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None
        )
        conditions = [
            condition(
                "Ready",
                _is_ready(sandbox),
                ready["reason"] if ready else "SandboxNotReady",
                ready["message"] if ready else "Sandbox is not ready yet",
                generation,
                old,
            )
        ]
        status = {
            "conditions": conditions,
            "sandbox": {
                "name": sandbox["metadata"]["name"],
                "podIPs": (sandbox.get("status") or {}).get("podIPs") or [],
            },
        }
        self.store.update(CLAIMS, namespace, name, {**claim, "status": status}, "status")

    def _refuse(self, claim: Obj, reason: str, message: str) -> None:
        old = (claim.get("status") or {}).get("conditions") or []
        status = {
            "conditions": [
                condition("Ready", False, reason, message, claim["metadata"].get("generation", 1), old)
            ]
        }
        self.store.update(
            CLAIMS,
            claim["metadata"]["namespace"],
            claim["metadata"]["name"],
            {**claim, "status": status},
            "status",
        )

    def _bind(self, claim: Obj) -> Obj | None:
        namespace, spec = claim["metadata"]["namespace"], claim["spec"]
        template_name = spec["sandboxTemplateRef"]["name"]
        template = self.store.find(TEMPLATES, namespace, template_name)
        if template is None:
            self._refuse(claim, "TemplateNotFound", f'SandboxTemplate "{template_name}" not found')
            return None
        env, policy = spec.get("env") or [], template["spec"].get("envVarsInjectionPolicy", "Disallowed")
        if env and policy == "Disallowed":
            self._refuse(claim, "EnvVarsInjectionRejected", "the template disallows environment variables")
            return None
        choice = spec.get("warmpool") or "default"
        sandbox = None
        if not env and choice != "none":
            pools = [
                pool
                for pool in self.store.select(POOLS, namespace)
                if pool["spec"]["sandboxTemplateRef"]["name"] == template_name
                and choice in ("default", pool["metadata"]["name"])
            ]
            if choice != "default" and not pools:
                self._refuse(claim, "WarmPoolNotFound", f'SandboxWarmPool "{choice}" not found')
                return None
            spare = [
                s for pool in pools for s in self._owned(pool) if not s["metadata"].get("deletionTimestamp")
            ]
            spare.sort(key=lambda s: (not _is_ready(s), s["metadata"]["creationTimestamp"]))
            sandbox = self._adopt(spare[0], claim) if spare else None
        if sandbox is None:
            labels = {CLAIM_UID_LABEL: claim["metadata"]["uid"], **self._extra_labels(claim)}
            sandbox = self.store.create(
                SANDBOXES,
                namespace,
                {
                    "metadata": {
                        "name": claim["metadata"]["name"],
                        "ownerReferences": [owner_reference(claim)],
                    },
                    "spec": sandbox_spec(template, labels, env),
                },
            )
        annotations = {
            **(claim["metadata"].get("annotations") or {}),
            SANDBOX_NAME_ANNOTATION: sandbox["metadata"]["name"],
        }
        self.store.update(
            CLAIMS,
            namespace,
            claim["metadata"]["name"],
            {**claim, "metadata": {**claim["metadata"], "annotations": annotations}},
        )
        return sandbox

    def _extra_labels(self, claim: Obj) -> dict[str, str]:
        return dict((claim["spec"].get("additionalPodMetadata") or {}).get("labels") or {})

    def _adopt(self, sandbox: Obj, claim: Obj) -> Obj:
        namespace, name = sandbox["metadata"]["namespace"], sandbox["metadata"]["name"]
        labels = {CLAIM_UID_LABEL: claim["metadata"]["uid"], **self._extra_labels(claim)}
        metadata = sandbox["metadata"]
        metadata["ownerReferences"] = [owner_reference(claim)]
        metadata["labels"] = {
            **{k: v for k, v in (metadata.get("labels") or {}).items() if k != POOL_LABEL},
            **labels,
        }
        adopted = self.store.update(SANDBOXES, namespace, name, sandbox)
        pod = self.store.find(PODS, namespace, name)
        if pod is not None:
            extra = (claim["spec"].get("additionalPodMetadata") or {}).get("annotations") or {}
            pod["metadata"]["labels"] = {**(pod["metadata"].get("labels") or {}), **labels}
            pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {}), **extra}
            self.store.update(PODS, namespace, name, pod)
        return adopted
