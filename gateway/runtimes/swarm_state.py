"""What the swarm says of one conversation: its services' tasks and their nodes, read as the
Runtime state contract (:mod:`gateway.runtimes.base`). Pure functions; no engine calls.

- STARTING: the sandbox's task is not running yet (pending, assigned, preparing,
  starting), or it runs and its relay's does not yet.
- RUNNING: both tasks run, on a node the manager sees ``ready``.
- EXITED (with a reason in words): the sandbox's task ended (complete, failed,
  rejected, shutdown, orphaned: its ``Err``, e.g. a missing image, and the node
  that said so), its relay's ended, or their node is ``down``/``disconnected``
  (the manager marks a node down once it misses its heartbeats: within a few of
  the dispatcher's heartbeat periods, 5 s by default) - the reason then names
  the node (hostname, address, id), so reconcile turns the conversation ERROR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.runtimes.base import SandboxState

_BEFORE_RUNNING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
ENDED = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}
_NODE_LOST = {"down", "disconnected", "unknown"}


@dataclass(frozen=True)
class Seen:
    """One conversation's state as its tasks and nodes show it."""

    state: SandboxState
    reason: str | None = None
    exit_code: int | None = None
    node_id: str | None = None


def latest(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The service's newest task (with restart condition none there is one, but a
    task the manager gave up on may linger beside a newer one)."""
    return max(tasks, key=lambda task: (task.get("Version") or {}).get("Index", 0), default=None)


def node_name(node: dict[str, Any] | None, node_id: str) -> str:
    """How a reason names a node: hostname, address and short id (hostnames may repeat)."""
    if node is None:
        return f"node {node_id[:12]} (no longer in the swarm)"
    hostname = (node.get("Description") or {}).get("Hostname") or "?"
    return f"node {hostname} ({node_address(node) or '?'}, id {node_id[:12]})"


def node_address(node: dict[str, Any]) -> str | None:
    """The node's address; a manager may report 0.0.0.0 there, its manager address is its own."""
    address = (node.get("Status") or {}).get("Addr")
    if not address or address == "0.0.0.0":
        manager = (node.get("ManagerStatus") or {}).get("Addr") or ""
        address = manager.rpartition(":")[0] or None
    return address


def seen(
    sandbox_tasks: list[dict[str, Any]],
    relay_tasks: list[dict[str, Any]] | None,
    nodes: dict[str, dict[str, Any]],
) -> Seen:
    """The state of a conversation whose sandbox service has ``sandbox_tasks`` and whose relay
    service (``None``: there is none) has ``relay_tasks``; ``nodes`` by id."""
    task = latest(sandbox_tasks)
    if task is None:
        return Seen(SandboxState.STARTING)  # the orchestrator has not made its task yet
    node_id = str(task.get("NodeID") or "")
    lost = _lost_node(task, nodes) or _lost_node(latest(relay_tasks or []), nodes)
    if lost:
        return Seen(SandboxState.EXITED, lost, node_id=node_id)
    status = task.get("Status") or {}
    current = status.get("State", "")
    if current in ENDED or task.get("DesiredState") in ("shutdown", "remove"):
        return Seen(SandboxState.EXITED, _ended(task, nodes, "sandbox"), _exit_code(status), node_id)
    relay = latest(relay_tasks or [])
    if current in _BEFORE_RUNNING:
        return Seen(SandboxState.STARTING, node_id=node_id)
    if relay_tasks is None:
        return Seen(SandboxState.EXITED, "its relay service is gone", node_id=node_id)
    relay_state = ((relay or {}).get("Status") or {}).get("State", "new")
    if relay is not None and (relay_state in ENDED or relay.get("DesiredState") in ("shutdown", "remove")):
        return Seen(SandboxState.EXITED, "its relay ended: " + _ended(relay, nodes, "relay"), node_id=node_id)
    if relay_state != "running":
        return Seen(SandboxState.STARTING, node_id=node_id)
    return Seen(SandboxState.RUNNING, node_id=node_id)


def _lost_node(task: dict[str, Any] | None, nodes: dict[str, dict[str, Any]]) -> str | None:
    if task is None or not task.get("NodeID"):
        return None
    node_id = str(task["NodeID"])
    node = nodes.get(node_id)
    if node is None:
        return f"the sandbox's {node_name(None, node_id)}"
    status = node.get("Status") or {}
    if status.get("State") in _NODE_LOST:
        message = f": {status['Message']}" if status.get("Message") else ""
        return f"the sandbox's {node_name(node, node_id)} is {status['State']}{message}"
    return None


def _ended(task: dict[str, Any], nodes: dict[str, dict[str, Any]], what: str) -> str:
    status = task.get("Status") or {}
    node_id = str(task.get("NodeID") or "")
    where = f" on {node_name(nodes.get(node_id), node_id)}" if node_id else ""
    error = status.get("Err") or ""
    if "No such image" in error or ("image" in error.lower() and "not found" in error.lower()):
        return (
            f"{node_name(nodes.get(node_id), node_id) if node_id else 'a node'} has no image for the "
            f"{what} ({error}): with no registry every node needs the image loaded"
        )
    code = _exit_code(status)
    detail = error or status.get("Message") or status.get("State")
    suffix = f" (exit code {code})" if code is not None else ""
    return f"the {what}'s task {status.get('State')}{where}: {detail}{suffix}"


def _exit_code(status: dict[str, Any]) -> int | None:
    container = status.get("ContainerStatus") or {}
    code = container.get("ExitCode")
    return int(code) if code is not None and container.get("ContainerID") else None
