"""What the swarm runtime asks the manager for, as plain data (no engine calls, no aiodocker).

The labels, limits, hardening and agent arguments are the Docker runtime's
(:mod:`gateway.runtimes.docker_config`); this module puts them into Swarm's
shapes: an overlay network, a token config, and two services of one replica.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxSpec
from gateway.runtimes.docker_bundle import agent_argv
from gateway.runtimes.docker_token import AGENT_CAPABILITIES, DATA_DIR
from sandbox_agent.protocol import CONVERSATION_ID_ENV

#: Where the token config is mounted in the sandbox (root's, 0400; the agent reads it as root).
TOKEN_PATH = "/run/convoy-agent/token"
#: Label on a claim config: the conversation id it belongs to is in CONVERSATION_ID already.
KIND = "convoy.swarm-kind"  # "token", "claim" or "paused" on configs
_LOG_DRIVER = {"Name": "json-file", "Options": {"max-size": "1m", "max-file": "1"}}
_RELAY_MEMORY = 64 * 1024 * 1024
#: The smallest memory value Swarm takes (a reservation below it is none).
_SMALLEST_MEMORY = 4 * 1024 * 1024


@dataclass(frozen=True)
class Names:
    """The manager's names of one conversation's objects. Service and config names are
    bounded (63 characters), hence the id's hex and a cut install name; the labels
    carry the full conversation id, and every lookup goes by label."""

    sandbox: str

    @classmethod
    def of(cls, install: str, conversation_id: UUID) -> Names:
        return cls(f"cv-{install[:20]}-{conversation_id.hex}")

    @property
    def relay(self) -> str:
        return f"{self.sandbox}-r"

    @property
    def network(self) -> str:
        return self.sandbox

    @property
    def token_config(self) -> str:
        return f"{self.sandbox}-t"

    @property
    def claim_config(self) -> str:
        return f"{self.sandbox}-c"

    @property
    def paused_config(self) -> str:
        return f"{self.sandbox}-p"


def network_config(name: str, labels: dict[str, str], internet: bool) -> dict[str, Any]:
    """The conversation's own overlay: internal (no route out) unless ``internet``; only the
    sandbox and its relay are attached, so no other sandbox shares a network with it."""
    return {
        "Name": name,
        "Driver": "overlay",
        "Internal": not internet,
        "Attachable": False,
        "CheckDuplicate": True,
        "Labels": labels,
    }


def reach_network_config(name: str) -> dict[str, Any]:
    """The installation's attachable overlay every relay joins (and a gateway container may)."""
    return {
        "Name": name,
        "Driver": "overlay",
        "Attachable": True,
        "CheckDuplicate": True,
        "Labels": {"convoy.shared": "true"},
    }


def _resources(memory: int, cpus: float, pids: int | None, reserve: float) -> dict[str, Any]:
    limits: dict[str, Any] = {"MemoryBytes": memory, "NanoCPUs": int(cpus * 1e9)}
    if pids is not None:
        limits["Pids"] = pids
    reserved = {"MemoryBytes": int(memory * reserve)} if memory * reserve >= _SMALLEST_MEMORY else {}
    return {"Limits": limits, "Reservations": reserved}


def _hardening(policy: cfg.ContainerPolicy) -> dict[str, Any]:
    """Swarm's share of the Docker runtime's hardening. Docker 20.10's service API has no
    ``no-new-privileges`` (API 1.41): every capability is dropped instead."""
    spec: dict[str, Any] = {"ReadOnly": policy.read_only, "Healthcheck": {"Test": ["NONE"]}}
    if policy.drop_capabilities:
        spec["CapabilityDrop"] = ["ALL"]
    return spec


def _task(
    container: dict[str, Any], resources: dict[str, Any], networks: list[str], constraints: list[str]
) -> dict[str, Any]:
    return {
        "ContainerSpec": container,
        "Resources": resources,
        # A lost task is an error: restarting it elsewhere would start an empty workspace.
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": constraints},
        "Networks": [{"Target": name} for name in networks],
        "LogDriver": _LOG_DRIVER,
    }


def sandbox_service(
    policy: cfg.ContainerPolicy,
    spec: SandboxSpec,
    names: Names,
    *,
    image_version: str,
    install: str,
    token_config_id: str,
    constraints: list[str],
    reserve: float,
    stop_grace: float = 0.0,
) -> dict[str, Any]:
    """The sandbox: the agent, its workspace and event log on an anonymous volume at /data
    (node-local, removed with the task's container: nothing to clean up on the node), its
    token from a config mounted root-only."""
    limits = cfg.effective_limits(policy.default_limits, spec.limits)
    assert limits.memory_bytes is not None and limits.cpus is not None
    env = cfg.task_env(spec) | {CONVERSATION_ID_ENV: str(spec.conversation_id)}
    entrypoint, command = agent_argv(cfg.agent_arguments(policy, spec, token_file=TOKEN_PATH))
    labels = cfg.sandbox_labels(spec, install, image_version)
    mounts: list[dict[str, Any]] = [{"Type": "volume", "Target": DATA_DIR}]
    if policy.read_only:
        mounts.append(
            {
                "Type": "tmpfs",
                "Target": "/tmp",
                "TmpfsOptions": {"SizeBytes": policy.tmpfs_bytes, "Mode": 0o1777},
            }
        )
    container = _hardening(policy) | {
        "Image": policy.image,
        "Command": entrypoint,
        "Args": command,
        "Dir": f"{DATA_DIR}/workspace",
        "User": "0:0",  # for the agent's start-up only: see gateway.runtimes.docker_token
        "Hostname": "sandbox",
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Labels": labels,
        "Init": policy.init,
        "StopSignal": "SIGTERM",
        "StopGracePeriod": int(stop_grace * 1e9),
        "Mounts": mounts,
        "Configs": [
            {
                "File": {"Name": TOKEN_PATH, "UID": "0", "GID": "0", "Mode": 0o400},
                "ConfigID": token_config_id,
                "ConfigName": names.token_config,
            }
        ],
    }
    if policy.drop_capabilities:
        container["CapabilityAdd"] = AGENT_CAPABILITIES
    resources = _resources(limits.memory_bytes, limits.cpus, limits.pids, reserve)
    return {
        "Name": names.sandbox,
        "Labels": labels,
        "TaskTemplate": _task(container, resources, [names.network], constraints),
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": {"Mode": "dnsrr"},  # no VIP: nothing reaches it by service address
    }


def relay_service(
    policy: cfg.ContainerPolicy,
    labels: dict[str, str],
    names: Names,
    *,
    reach_network: str,
    target_ip: str,
    node_id: str,
    port: int | None,
) -> dict[str, Any]:
    """The relay, on the sandbox's node (``node_id``), on its network and on the reach network;
    with ``port``, the agent port published there in ``host`` mode (no routing mesh)."""
    cpus = policy.default_limits.cpus or 1.0
    container = _hardening(policy) | {
        "Image": policy.image,
        "Command": [
            "python3",
            "-I",
            "-S",
            cfg.RELAY_SCRIPT,
            str(cfg.AGENT_PORT),
            target_ip,
            str(cfg.AGENT_PORT),
        ],
        "User": policy.user,
        "Labels": labels | {cfg.ROLE: cfg.RELAY},
        "StopSignal": "SIGTERM",
        "StopGracePeriod": 0,  # it holds no state: stopping it gracefully saves nothing
    }
    endpoint: dict[str, Any] = {"Mode": "dnsrr"}
    if port is not None:
        endpoint["Ports"] = [
            {"Protocol": "tcp", "TargetPort": cfg.AGENT_PORT, "PublishedPort": port, "PublishMode": "host"}
        ]
    resources = _resources(_RELAY_MEMORY, cpus, 16, 0.0)
    return {
        "Name": names.relay,
        "Labels": labels | {cfg.ROLE: cfg.RELAY},
        "TaskTemplate": _task(container, resources, [names.network, reach_network], [f"node.id=={node_id}"]),
        "Mode": {"Replicated": {"Replicas": 1}},
        "EndpointSpec": endpoint,
    }


def spec_from_service(service: dict[str, Any], token: str | None) -> SandboxSpec | None:
    """The spec of a sandbox service (``services`` list item) with its token; ``None`` when
    its labels are not ours or the token is unknown (the Docker runtime's reading of labels)."""
    if not token:
        return None
    task = (service.get("Spec") or {}).get("TaskTemplate") or {}
    container = task.get("ContainerSpec") or {}
    info = {
        "Config": {
            "Labels": (service.get("Spec") or {}).get("Labels") or {},
            "Env": container.get("Env") or [],
        }
    }
    return cfg.spec_from_container(info, token)


def published_port(service: dict[str, Any]) -> int | None:
    for port in ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []:
        if port.get("TargetPort") == cfg.AGENT_PORT and port.get("PublishedPort"):
            return int(port["PublishedPort"])
    return None


def task_address(task: dict[str, Any], network: str) -> str | None:
    """The task's address on ``network`` (by name), as the allocator assigned it (before it runs)."""
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return str(address).split("/")[0]
    return None


def claim_labels(install: str, conversation_id: UUID, kind: str) -> dict[str, str]:
    return {cfg.INSTALL: install, cfg.CONVERSATION_ID: str(conversation_id), KIND: kind}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
