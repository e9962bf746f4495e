"""What the API's objects say of one sandbox: its state, address and, once ended, why. Pure.

The runtime's half of the state contract (API objects -> :class:`SandboxState`,
:mod:`gateway.runtimes.base`); the gateway's half (SandboxState -> a conversation's
status, :mod:`gateway.reconciling`) and its notices (:mod:`gateway.status`) are above the seam.

A conversation is carried by a ``Sandbox`` (cold), a ``SandboxClaim`` (from a
pool) or, in the ``pods`` mode, a ``Pod``; its pod is found by name (a
Sandbox's pod bears the Sandbox's name, or the one its
``agents.x-k8s.io/pod-name`` annotation gives; a claim's is its sandbox's,
named in ``status.sandbox.name``). In this order:

1. the pod was made later than any start may take after the carrier (a
   controller replaced a lost one: new pod, empty workspace): EXITED, never
   the old sandbox silently moved;
2. the pod's node is lost (``status.reason`` ``NodeLost``, or a
   ``DisruptionTarget`` condition, as the node lifecycle controller and the
   taint manager set them): EXITED, the reason naming the node;
3. the agent's container has terminated (or the pod's phase is final, or the
   carrier's ``Finished`` condition is True): EXITED with the exit code, OOM
   when the kubelet says ``OOMKilled``, and the termination message (the last
   log lines: ``FallbackToLogsOnError``);
4. the carrier's ``Ready`` condition is True (the Sandbox's and claim's mirror
   the pod's, which follows the agent's ``/ready`` probe) and it has an IP: RUNNING;
5. else STARTING.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.runtimes.base import SandboxState
from gateway.runtimes.kubernetes_objects import AGENT_PORT

POD_NAME_ANNOTATION = "agents.x-k8s.io/pod-name"
_REASON_CHARS = 2000


@dataclass(frozen=True)
class Observed:
    state: SandboxState
    base_url: str
    reason: str | None = None
    exit_code: int | None = None
    oom_killed: bool = False


def pod_name(kind: str, obj: dict[str, Any]) -> str | None:
    """The name of the pod that runs ``obj`` (a carrier of ``kind``), if known yet."""
    meta = obj.get("metadata") or {}
    if kind == "pods":
        return str(meta.get("name"))
    if kind == "sandboxclaims":
        found = ((obj.get("status") or {}).get("sandbox") or {}).get("name")
        return str(found) if found else None
    return str((meta.get("annotations") or {}).get(POD_NAME_ANNOTATION) or meta.get("name"))


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def _true(obj: dict[str, Any] | None, kind: str) -> bool:
    found = _condition(obj, kind)
    return found is not None and found.get("status") == "True"


def _address(kind: str, obj: dict[str, Any], pod: dict[str, Any] | None) -> str | None:
    status = obj.get("status") or {}
    ips: list[str] = []
    if kind == "sandboxes":
        ips = list(status.get("podIPs") or [])
    elif kind == "sandboxclaims":
        ips = list((status.get("sandbox") or {}).get("podIPs") or [])
    found = ips[0] if ips else ((pod or {}).get("status") or {}).get("podIP")
    return str(found) if found else None


def base_url_of(ip: str | None) -> str:
    if ip is None:
        return ""
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{AGENT_PORT}"


def _lost(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or "(unknown)"
    disruption = _condition(pod, "DisruptionTarget")
    if status.get("reason") == "NodeLost" or (disruption is not None and disruption.get("status") == "True"):
        why = status.get("message") or (disruption or {}).get("message") or (disruption or {}).get("reason")
        return f"the node {node} running the sandbox was lost" + (f": {why}" if why else "")
    return None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == "agent":
            found = (container.get("state") or {}).get("terminated")
            return dict(found) if found else None
    return None


def _ended(terminated: dict[str, Any]) -> Observed:
    code = terminated.get("exitCode")
    oom = terminated.get("reason") == "OOMKilled"
    message = str(terminated.get("message") or "").strip()[-_REASON_CHARS:]
    if oom:
        reason = f"the sandbox ran out of memory and was killed (OOM, exit code {code})"
    else:
        reason = f"the sandbox exited with code {code}" + (
            f" ({terminated['reason']})" if terminated.get("reason") else ""
        )
    if message:
        reason += f": {message}"
    return Observed(SandboxState.EXITED, "", reason, int(code) if code is not None else None, oom)


def created(obj: dict[str, Any]) -> float | None:
    """When the API made ``obj`` (its creationTimestamp, POSIX seconds), if it says."""
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp() if stamp else None
    except ValueError:
        return None


def _replaced(obj: dict[str, Any], pod: dict[str, Any], within: float) -> str | None:
    """A start gives up after ``within`` seconds: a pod made later than that after its carrier
    is no pod the sandbox started with (a Sandbox controller's replacement of a lost one)."""
    made, carried = created(pod), created(obj)
    if made is None or carried is None or made - carried <= within:
        return None
    node = (pod.get("spec") or {}).get("nodeName") or "another node"
    return (
        f"the sandbox's pod was replaced on {node} (its node was lost or it was deleted): "
        "its workspace and event log went with the old pod"
    )


def observe(kind: str, obj: dict[str, Any], pod: dict[str, Any] | None, within: float) -> Observed:
    """The state of the sandbox carried by ``obj`` (of ``kind``) whose pod is ``pod``; ``within``:
    the seconds a start may take (the runtime's start timeout)."""
    url = base_url_of(_address(kind, obj, pod))
    if pod is not None and kind != "pods":
        replaced = _replaced(obj, pod, within)
        if replaced is not None:
            return Observed(SandboxState.EXITED, url, replaced)
    if pod is not None:
        lost = _lost(pod)
        if lost is not None:
            return Observed(SandboxState.EXITED, url, lost)
        terminated = _terminated(pod)
        if terminated is not None:
            return _with_url(_ended(terminated), url)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Failed", "Succeeded"):
            message = (pod.get("status") or {}).get("message") or ""
            return Observed(SandboxState.EXITED, url, f"the sandbox's pod ended ({phase}) {message}".strip())
    finished = _condition(obj, "Finished")
    if finished is not None and finished.get("status") == "True":
        text = finished.get("message") or finished.get("reason") or "its pod ended"
        return Observed(SandboxState.EXITED, url, f"the sandbox finished: {text}")
    ready = _true(pod if kind == "pods" else obj, "Ready")
    if ready and url:
        return Observed(SandboxState.RUNNING, url)
    return Observed(SandboxState.STARTING, url)


def _with_url(observed: Observed, url: str) -> Observed:
    return Observed(observed.state, url, observed.reason, observed.exit_code, observed.oom_killed)
