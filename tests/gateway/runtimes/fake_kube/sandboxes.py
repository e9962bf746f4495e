"""The simulated agent-sandbox controller for ``Sandbox`` (agents.x-k8s.io/v1alpha1).

What the real controller does, as its API documents it (api/v1alpha1/sandbox_types.go):
for a Sandbox with ``replicas`` 1 it keeps a Pod named like the Sandbox (or
after the annotation ``agents.x-k8s.io/pod-name``) from ``spec.podTemplate``,
owned by it (so deleting the Sandbox deletes the Pod), labelled
``agents.x-k8s.io/sandbox-name-hash``, and a new one if the Pod goes away;
with ``spec.service`` a headless Service of the same name. Status:

- ``Ready`` True (DependenciesReady) once the Pod is Running, Ready and has an
  IP; else False: DependenciesNotReady (with the Pod's state, and its
  ``status.reason``/``message`` such as NodeLost, in the message),
  SandboxSuspended (``replicas`` 0; ``Suspended`` then says whether the Pod is
  gone), PodSucceeded/PodFailed (with ``Finished`` True), SandboxExpired (past
  ``shutdownTime``, policy Retain; Delete deletes the Sandbox), ReconcilerError;
- ``podIPs``, ``replicas``, ``selector``, ``service``/``serviceFQDN``.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from fake_kube.pod_status import PODS
from fake_kube.reconciler import Key, Reconciler, condition, controller_of, name_hash, owner_reference
from fake_kube.resources import BY_KIND
from fake_kube.status import ApiError
from fake_kube.store import Event, Obj, Store

SANDBOXES, SERVICES = BY_KIND["Sandbox"], BY_KIND["Service"]
NAME_HASH_LABEL = "agents.x-k8s.io/sandbox-name-hash"
POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"


def _pod_state(pod: Obj) -> tuple[bool, str]:
    """Whether the pod serves, and what to say when it does not."""
    status = pod.get("status") or {}
    ready: Obj = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    serving = status.get("phase") == "Running" and ready.get("status") == "True" and bool(status.get("podIP"))
    message = (
        f"Pod exists with phase: {status.get('phase', 'Pending')}; Pod Ready condition: "
        f"{ready.get('status', 'Unknown')}"
    )
    if status.get("reason"):
        message += f"; {status['reason']}: {status.get('message', '')}"
    if pod["metadata"].get("deletionTimestamp"):
        message += "; Pod is being deleted"
    return serving, message


class SandboxController:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconciler = Reconciler(store, self._route, self._reconcile)

    def _route(self, event: Event) -> list[Key]:
        if event.resource == SANDBOXES:
            return [("Sandbox", event.namespace, event.object["metadata"]["name"])]
        if event.resource in (PODS, SERVICES):
            owner = controller_of(event.object)
            if owner is not None and owner.get("kind") == "Sandbox":
                return [("Sandbox", event.namespace, owner["name"])]
        return []

    def _reconcile(self, key: Key) -> None:
        _, namespace, name = key
        sandbox = self.store.find(SANDBOXES, namespace, name)
        if sandbox is None or sandbox["metadata"].get("deletionTimestamp"):
            return
        spec, old = sandbox["spec"], (sandbox.get("status") or {}).get("conditions") or []
        generation = sandbox["metadata"].get("generation", 1)
        pod_name = (sandbox["metadata"].get("annotations") or {}).get(POD_NAME_ANNOTATION) or name
        pod = self.store.find(PODS, namespace, pod_name)
        status: Obj = {"selector": f"{NAME_HASH_LABEL}={name_hash(name)}", "replicas": 0}
        conditions: list[Obj] = []
        if spec.get("shutdownTime"):
            left = (datetime.fromisoformat(spec["shutdownTime"]) - datetime.now(UTC)).total_seconds()
            if left <= 0:
                self._expire(sandbox, pod)
                return
            self.reconciler.enqueue(key, left)
        if spec.get("replicas", 1) == 0:
            if pod is not None:
                self.store.delete(PODS, namespace, pod_name)
            gone = self.store.find(PODS, namespace, pod_name) is None
            conditions.append(
                condition(
                    "Suspended",
                    gone,
                    "PodTerminated" if gone else "PodNotTerminated",
                    "Pod is terminated" if gone else "Pod is terminating",
                    generation,
                    old,
                )
            )
            conditions.append(
                condition("Ready", False, "SandboxSuspended", "Sandbox is suspended", generation, old)
            )
        else:
            try:
                pod = pod or self._create_pod(sandbox, pod_name)
                self._service(sandbox, status)
            except ApiError as error:
                conditions.append(
                    condition(
                        "Ready", False, "ReconcilerError", f"Error seen: {error.message}", generation, old
                    )
                )
            else:
                status["replicas"] = 1
                status["podIPs"] = [ip["ip"] for ip in (pod.get("status") or {}).get("podIPs") or []]
                conditions += self._ready(pod, generation, old)
        self._write(sandbox, status, conditions)

    def _create_pod(self, sandbox: Obj, pod_name: str) -> Obj:
        template = copy.deepcopy(sandbox["spec"]["podTemplate"])
        metadata = template.get("metadata") or {}
        labels = {**(metadata.get("labels") or {}), NAME_HASH_LABEL: name_hash(sandbox["metadata"]["name"])}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "spec": template["spec"],
            "metadata": {
                "name": pod_name,
                "labels": labels,
                "annotations": metadata.get("annotations") or {},
                "ownerReferences": [owner_reference(sandbox)],
            },
        }
        return self.store.create(PODS, sandbox["metadata"]["namespace"], pod)

    def _service(self, sandbox: Obj, status: Obj) -> None:
        namespace, name = sandbox["metadata"]["namespace"], sandbox["metadata"]["name"]
        existing = self.store.find(SERVICES, namespace, name)
        wanted = sandbox["spec"].get("service")
        if wanted is False and existing is not None:
            self.store.delete(SERVICES, namespace, name)
            return
        if wanted and existing is None:
            selector = {NAME_HASH_LABEL: name_hash(name)}
            existing = self.store.create(
                SERVICES,
                namespace,
                {
                    "metadata": {
                        "name": name,
                        "labels": selector,
                        "ownerReferences": [owner_reference(sandbox)],
                    },
                    "spec": {"clusterIP": "None", "selector": selector},
                },
            )
        if existing is not None:
            status.update(service=name, serviceFQDN=f"{name}.{namespace}.svc.cluster.local")

    def _ready(self, pod: Obj, generation: int, old: list[Obj]) -> list[Obj]:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            reason = f"Pod{phase}"
            return [
                condition("Finished", True, reason, f"Pod {phase.lower()}", generation, old),
                condition("Ready", False, reason, f"Pod {phase.lower()}", generation, old),
            ]
        serving, message = _pod_state(pod)
        if serving:
            return [condition("Ready", True, "DependenciesReady", "Pod is Ready", generation, old)]
        return [condition("Ready", False, "DependenciesNotReady", message, generation, old)]

    def _expire(self, sandbox: Obj, pod: Obj | None) -> None:
        namespace, name = sandbox["metadata"]["namespace"], sandbox["metadata"]["name"]
        if pod is not None:
            self.store.delete(PODS, namespace, pod["metadata"]["name"])
        if self.store.find(SERVICES, namespace, name) is not None:
            self.store.delete(SERVICES, namespace, name)
        if sandbox["spec"].get("shutdownPolicy", "Retain") == "Delete":
            self.store.delete(SANDBOXES, namespace, name)
            return
        old = (sandbox.get("status") or {}).get("conditions") or []
        self._write(
            sandbox,
            {},
            [
                condition(
                    "Ready",
                    False,
                    "SandboxExpired",
                    "Sandbox has expired",
                    sandbox["metadata"].get("generation", 1),
                    old,
                )
            ],
        )

    def _write(self, sandbox: Obj, status: Obj, conditions: list[Obj]) -> None:
        status["conditions"] = conditions
        namespace, name = sandbox["metadata"]["namespace"], sandbox["metadata"]["name"]
        self.store.update(SANDBOXES, namespace, name, {**sandbox, "status": status}, "status")
