"""Writing a pod's status as a kubelet does: conditions, container statuses, phase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fake_kube.resources import BY_KIND
from fake_kube.status import ApiError
from fake_kube.store import Obj, Store, now

PODS = BY_KIND["Pod"]


class Gone(Exception):
    """The pod (this incarnation of it: same uid) no longer exists."""


def set_condition(
    status: Obj, kind: str, value: str, reason: str | None = None, message: str | None = None
) -> None:
    """Set one condition; its lastTransitionTime changes only when its status does."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    old = next((condition for condition in conditions if condition["type"] == kind), None)
    condition: Obj = {
        "type": kind,
        "status": value,
        "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == value else now(),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    if old is None:
        conditions.append(condition)
    else:
        conditions[conditions.index(old)] = condition


def condition(obj: Obj, kind: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def containers_ready(status: Obj, ready: bool) -> None:
    """The ContainersReady and Ready conditions of a pod whose containers are (not) ready."""
    for kind in ("ContainersReady", "Ready"):
        if ready:
            set_condition(status, kind, "True")
        else:
            set_condition(status, kind, "False", "ContainersNotReady", "containers with unready status")


def pending(pod: Obj, status: Obj) -> None:
    """A pod just bound to a node: Pending, its container being created."""
    status.update(phase="Pending", hostIP="127.0.0.1", hostIPs=[{"ip": "127.0.0.1"}], startTime=now())
    set_condition(status, "PodScheduled", "True")
    set_condition(status, "Initialized", "True")  # init containers: taken as succeeded
    containers_ready(status, False)
    status["containerStatuses"] = [container_status(pod, {"waiting": {"reason": "ContainerCreating"}})]


def container_status(
    pod: Obj,
    state: dict[str, Any],
    ready: bool = False,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
) -> Obj:
    """The status of the pod's first container."""
    container = pod["spec"]["containers"][0]
    found: Obj = {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": ready,
        "restartCount": restarts,
        "started": "running" in state,
        "state": state,
    }
    if "running" in state or "terminated" in state:
        found["containerID"] = f"fake://{pod['metadata']['uid']}"
    if last:
        found["lastState"] = last
    return found


def write(store: Store, namespace: str, name: str, uid: str, change: Callable[[Obj, Obj], None]) -> Obj:
    """Apply ``change(pod, status)`` to the stored pod and write it through ``/status``;
    :class:`Gone` when the pod (with this uid) is not there any more."""
    pod = store.find(PODS, namespace, name)
    if pod is None or pod["metadata"]["uid"] != uid:
        raise Gone(name)
    change(pod, pod.setdefault("status", {}))
    try:
        return store.update(PODS, namespace, name, pod, "status")
    except ApiError as error:
        if error.code == 404:
            raise Gone(name) from error
        raise
