"""What the Kubernetes runtime asks the API server for, as plain dicts. No client library here.

Pure functions of a :class:`PodPolicy` (what the settings give every sandbox
pod) and a :class:`SandboxSpec`: the objects' names, labels and annotations,
the hardened pod spec, the agent-sandbox objects around it, the Secrets and the
installation's NetworkPolicies; and the spec read back from what the API holds.
Facts about the agent-sandbox API these rely on are in :mod:`gateway.runtimes.kubernetes`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gateway.runtimes.base import DEFAULT_TEMPLATE, ResourceLimits, SandboxSpec
from gateway.runtimes.claiming import claimed_spec
from sandbox_agent.claim import Claim
from sandbox_agent.protocol import RESERVED_ENV_PREFIX

SANDBOX_API = "agents.x-k8s.io/v1alpha1"
EXTENSIONS_API = "extensions.agents.x-k8s.io/v1alpha1"
AGENT_PORT = 8080

# Labels (selectable: values are short and label-safe) and the one annotation with the rest.
INSTALL = "convoy.install"
CONVERSATION_ID = "convoy.conversation-id"
#: On objects: "sandbox" (a conversation's Sandbox/Pod), "spare" (a claim made ahead for the
#: pool), "secret" (a conversation's Secret), "claim-secret", "pool" (templates, warm pools).
#: On pods: "sandbox" for every sandbox pod (the NetworkPolicies select them by it).
ROLE = "convoy.role"
INTERNET = "convoy.internet"  # on pods that may reach the internet ("true")
SPEC = "convoy.spec"  # annotation: the spec's metadata, JSON (no token, no env values)
#: Annotation of a claim record: "pending" from its create until the agent took the claim, then
#: "delivered" (a record without it, from an older gateway, counts as delivered).
CLAIM_STATE = "convoy.claim-state"

DATA_DIR = "/data"
TOKEN_DIR = "/run/convoy/secret"
TOKEN_FILE = f"{TOKEN_DIR}/token"
CLAIM_FILE = f"{DATA_DIR}/agent/claim.json"
ENV_KEY_PREFIX = "env."  # a Secret's keys holding the conversation's task environment
#: Networks a sandbox with internet may not reach: the cluster's own and the cloud metadata.
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"]


@dataclass(frozen=True)
class PodPolicy:
    """What every sandbox pod of the installation gets (the ``kubernetes_*`` settings)."""

    install: str
    namespace: str
    image: str
    image_pull_policy: str
    user: str  # UID:GID of the tasks (and of the agent once it has read its token)
    default_limits: ResourceLimits
    tmpfs_bytes: int
    #: Seconds a pod stays bound to an unreachable or not-ready node before it is evicted.
    node_lost_after: int
    #: Labels of the gateway's pods: the only ones the sandboxes accept connections from.
    gateway_labels: dict[str, str]


# --- names ---------------------------------------------------------------------------


def object_name(conversation_id: UUID) -> str:
    """The name of a conversation's Sandbox, SandboxClaim, Pod and Secret (a UUID is unique
    across installations sharing a namespace; the install label tells them apart)."""
    return f"convoy-{conversation_id}"


def install_slug(install: str) -> str:
    """A DNS-label-safe, collision-free short form of the installation name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", install.lower()).strip("-")[:16].strip("-") or "x"
    return f"{slug}-{hashlib.sha256(install.encode()).hexdigest()[:6]}"


def pool_name(install: str, template: str) -> str:
    """The SandboxTemplate and SandboxWarmPool of one pool."""
    tail = re.sub(r"[^a-z0-9-]+", "-", template.lower()).strip("-")[:24] or "t"
    return f"convoy-{install_slug(install)}-{tail}-{hashlib.sha256(template.encode()).hexdigest()[:4]}"


def claim_secret_name(install: str) -> str:
    return f"convoy-{install_slug(install)}-claim"


def policy_names(install: str) -> tuple[str, str]:
    """The installation's NetworkPolicies: every sandbox's, and the internet's."""
    base = f"convoy-{install_slug(install)}"
    return f"{base}-sandboxes", f"{base}-internet"


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


# --- the spec, as metadata -------------------------------------------------------------


def task_env(spec: SandboxSpec) -> dict[str, str]:
    # The agent's own variables are the runtime's to set, never the caller's.
    return {key: value for key, value in spec.env.items() if not key.upper().startswith(RESERVED_ENV_PREFIX)}


def spec_annotation(spec: SandboxSpec) -> str:
    """Everything of ``spec`` but the token and the env values (those are in its Secret)."""
    return json.dumps(
        {
            "owner": spec.owner,
            "title": spec.title,
            "created_at": spec.created_at.isoformat(),
            "limits": [spec.limits.memory_bytes, spec.limits.cpus, spec.limits.pids],
            "internet": spec.internet,
            "idle_timeout": spec.idle_timeout,
            "on_idle": spec.on_idle,
            "env_keys": sorted(task_env(spec)),
            "pool": spec.pool,
            "template": spec.template,
        },
        separators=(",", ":"),
    )


def spec_of(obj: dict[str, Any], token: str | None, data: dict[str, str]) -> SandboxSpec | None:
    """The spec of a conversation's object (Sandbox, SandboxClaim or Pod) with its ``token`` (else
    ``data["token"]``) and its Secrets' decoded ``data`` (env values; a claimed spare's claim).
    ``None`` when the object is not ours or its token is unknown. A spare with a claim is the
    claiming conversation's (the claim is recorded before it is sent to the agent)."""
    meta = obj.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    try:
        known = json.loads(annotations[SPEC])
        memory, cpus, pids = known["limits"]
        env_keys: list[str] = known["env_keys"]
        spec = SandboxSpec(
            conversation_id=UUID(labels[CONVERSATION_ID]),
            owner=str(known["owner"]),
            title=str(known["title"]),
            token=token or data["token"],
            created_at=datetime.fromisoformat(known["created_at"]),
            env={key: data[ENV_KEY_PREFIX + key] for key in env_keys if ENV_KEY_PREFIX + key in data},
            limits=ResourceLimits(memory_bytes=memory, cpus=cpus, pids=pids),
            internet=bool(known["internet"]),
            idle_timeout=known["idle_timeout"],
            on_idle=str(known["on_idle"]),
            pool=known["pool"],
            template=str(known.get("template") or DEFAULT_TEMPLATE),
        )
    except (KeyError, ValueError, TypeError):
        return None
    if spec.pool is not None and "claim" in data:
        try:
            return claimed_spec(spec, Claim.model_validate_json(data["claim"]))
        except ValueError:
            return None
    return spec


def decoded(secret: dict[str, Any] | None) -> dict[str, str]:
    """A Secret's ``data`` (base64), decoded; ``{}`` for none."""
    raw = (secret or {}).get("data") or {}
    try:
        return {key: base64.b64decode(value).decode() for key, value in raw.items()}
    except (ValueError, TypeError):
        return {}


def _encoded(values: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}


# --- Secrets ---------------------------------------------------------------------------


def metadata(
    name: str, policy: PodPolicy, labels: dict[str, str], spec: SandboxSpec | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": policy.namespace,
        "labels": {INSTALL: policy.install} | labels,
    }
    if spec is not None:
        meta["annotations"] = {SPEC: spec_annotation(spec)}
    return meta


def conversation_secret(policy: PodPolicy, spec: SandboxSpec) -> dict[str, Any]:
    """A sandbox's token (a spare's: its claim secret) and task environment, readable only with
    RBAC to secrets; the pod mounts the token root-only and takes the env by ``secretKeyRef``."""
    values = {"token": spec.token} | {ENV_KEY_PREFIX + key: value for key, value in task_env(spec).items()}
    labels = {CONVERSATION_ID: str(spec.conversation_id), ROLE: "secret"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(object_name(spec.conversation_id), policy, labels),
        "type": "Opaque",
        "data": _encoded(values),
    }


def claim_secret(policy: PodPolicy, secret: str) -> dict[str, Any]:
    """The claim secret every spare of the installation's warm pools is started with."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(claim_secret_name(policy.install), policy, {ROLE: "claim-secret"}),
        "type": "Opaque",
        "data": _encoded({"token": secret}),
    }


def claim_record_name(conversation_id: UUID) -> str:
    return f"{object_name(conversation_id)}-claim"


def claim_record(policy: PodPolicy, spec: SandboxSpec, claim: Claim) -> dict[str, Any]:
    """A claimed spare's claim (its token included), ``convoy-<id>-claim``: created once, before
    the claim is sent, so a second gateway's create of it fails (409) and no claim is lost.
    It is made "pending" (:data:`CLAIM_STATE`), and marked "delivered" once the agent took it."""
    labels = {CONVERSATION_ID: str(spec.conversation_id), ROLE: "claim"}
    meta = metadata(claim_record_name(spec.conversation_id), policy, labels)
    meta["annotations"] = {CLAIM_STATE: "pending"}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "Opaque",
        "data": _encoded({"claim": claim.model_dump_json()}),
    }
