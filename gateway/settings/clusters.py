"""The runtimes on a cluster: Kubernetes and Docker Swarm (which also reads the ``docker_*``
settings of :mod:`gateway.settings.runtimes`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from gateway.settings.runtimes import DockerReach

__all__ = ["ClusterRuntimeSettings"]


class ClusterRuntimeSettings(BaseModel):
    """The Kubernetes and swarm runtimes."""

    # --- kubernetes runtime (gateway/runtimes/kubernetes.py) ------------------------
    kubernetes_kubeconfig: str | None = Field(
        None, description="A kubeconfig file; unset: in-cluster (the pod's service account), else KUBECONFIG."
    )
    kubernetes_namespace: str | None = Field(None, description="Where sandboxes go; unset: the config's.")
    kubernetes_mode: Literal["sandboxes", "pods"] = Field(
        "sandboxes",
        description="sandboxes: the agent-sandbox CRDs (Sandbox; SandboxTemplate, SandboxWarmPool and "
        "SandboxClaim for pools); pods: plain Pods, for clusters without them.",
    )
    kubernetes_image: str = Field(
        "convoy-sandbox:latest", description="The sandbox image (the nodes pull it)."
    )
    kubernetes_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    kubernetes_gateway_labels: str = Field(
        "app.kubernetes.io/name=convoy-gateway",
        pattern=r"^[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*(,[A-Za-z0-9./_-]+=[A-Za-z0-9._-]*)*$",
        description="Labels of the gateway's pods (k=v,...): the only pods sandboxes admit.",
    )
    kubernetes_memory: int = Field(512 * 1024 * 1024, ge=6 * 1024 * 1024, description="Bytes, by default.")
    kubernetes_cpus: float = Field(1.0, gt=0)
    kubernetes_node_lost_after: int = Field(
        30, ge=0, description="Seconds a sandbox stays on an unreachable node before it is evicted (ERROR)."
    )
    kubernetes_warm_replicas: int = Field(
        0,
        ge=0,
        description="Ready sandboxes a SandboxWarmPool keeps behind each pool's claimed-ahead spares, "
        "so a refill binds at once: each costs a pod beside the pool's own. 0: no SandboxWarmPool "
        "(a pool of N costs N pods; a refill starts a pod).",
    )

    # --- swarm runtime (issue 13): docker_url/DOCKER_HOST names a manager; docker_* apply too ---
    swarm_reach: DockerReach = Field(
        "auto",
        description="published: the relay's port in host mode on its node (a gateway outside the "
        "cluster); network: its address on swarm_network (a gateway container attached to it); "
        "auto: network when the gateway runs in a container of the manager's engine.",
    )
    swarm_network: str = Field(
        "convoy-swarm", description="The attachable overlay every relay joins (made when missing)."
    )
    swarm_ports: str = Field(
        "20000-29999",
        pattern=r"^\d{2,5}-\d{2,5}$",
        description="Host ports the relays publish (reach published).",
    )
    swarm_constraints: list[str] = Field(
        default_factory=list,
        description='Placement constraints of every sandbox, e.g. ["node.role==worker"].',
    )
    swarm_reservation: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of a sandbox's memory limit reserved on its node (the scheduler's spread).",
    )
    swarm_snapshot_dir: Path | None = Field(
        None,
        description="Where swarm snapshots are kept (tar archives, one folder per installation); "
        "unset: state_dir/swarm-snapshots. Several gateways of one installation must share it "
        "(a volume), or each lists only the snapshots taken through it.",
    )
