"""The sandbox pod and the objects that carry it, as plain dicts. No client library here.

One hardened pod spec (:func:`pod_spec`) serves all three carriers: a cold
conversation's ``Sandbox`` (its ``spec.podTemplate``), a pool's
``SandboxTemplate`` (whose ``SandboxWarmPool`` keeps spares of it, claimed by a
``SandboxClaim``), and the plain ``Pod`` of the ``pods`` mode. The
installation's NetworkPolicies select every sandbox pod by its labels.

Hardening, as on Docker (see :mod:`gateway.runtimes.docker_token`): the agent
starts as root holding only SETUID and SETGID (every other capability dropped),
reads its root-only token, then works as the sandbox user; no privilege
escalation, a read-only root filesystem, the runtime's default seccomp profile,
no service-account token, no service links in the environment, memory and CPU
limits (Kubernetes has no per-pod pids limit: the kubelet's ``podPidsLimit``
is the cluster's). ``runAsNonRoot`` cannot be set: the agent needs root for
the one read and the switch. An init container (no capability but CHOWN) gives
the empty volumes the image's layout: ``/data/agent`` root's alone (the claim),
the workspace and event log the sandbox user's.
"""

from __future__ import annotations

from typing import Any

from gateway.runtimes.base import SandboxSpec
from gateway.runtimes.docker_bundle import agent_argv
from gateway.runtimes.docker_policy import effective_limits
from gateway.runtimes.kubernetes_objects import (
    AGENT_PORT,
    CLAIM_FILE,
    CONVERSATION_ID,
    DATA_DIR,
    ENV_KEY_PREFIX,
    EXTENSIONS_API,
    INTERNET,
    PRIVATE_RANGES,
    ROLE,
    SANDBOX_API,
    TOKEN_DIR,
    TOKEN_FILE,
    PodPolicy,
    claim_secret_name,
    metadata,
    object_name,
    policy_names,
    pool_name,
    task_env,
)
from sandbox_agent.protocol import CONVERSATION_ID_ENV

_PREPARE = (
    "mkdir -p /data/workspace /data/state && chmod 0750 /data/state && chmod 0755 /data/workspace /data"
    " && chmod 0700 /data/agent && chown {user} /data/workspace /data/state"
)
_MEBI = 1024 * 1024


def pod_labels(policy: PodPolicy, spec: SandboxSpec | None) -> dict[str, str]:
    """Every sandbox pod's: the installation and ``role=sandbox`` (what the policies select);
    a conversation's also its id, and ``internet`` where it has it. ``None``: a pool's spare."""
    labels = {ROLE: "sandbox"}
    if spec is not None:
        labels[CONVERSATION_ID] = str(spec.conversation_id)
        if spec.internet:
            labels[INTERNET] = "true"
    return labels


def _resources(policy: PodPolicy, spec: SandboxSpec | None) -> dict[str, Any]:
    limits = effective_limits(policy.default_limits, spec.limits if spec else policy.default_limits)
    assert limits.memory_bytes is not None and limits.cpus is not None
    millis = max(1, int(limits.cpus * 1000))
    # Requests are what the scheduler reserves: an idle sandbox uses little of its limits.
    return {
        "limits": {"memory": str(limits.memory_bytes), "cpu": f"{millis}m"},
        "requests": {"memory": str(min(limits.memory_bytes, 64 * _MEBI)), "cpu": f"{min(millis, 50)}m"},
    }


def _security(capabilities: list[str]) -> dict[str, Any]:
    return {
        "runAsUser": 0,  # for the agent's start-up only (see the module docstring)
        "runAsGroup": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": capabilities},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_spec(policy: PodPolicy, spec: SandboxSpec | None, secret_name: str, *, spare: bool) -> dict[str, Any]:
    """The pod of one sandbox. ``spec``: a conversation's (its id and task env in the pod),
    ``None`` for a pool's template (any conversation claims it later, env and all).
    ``secret_name``: the Secret whose ``token`` the agent reads (the claim secret for a spare)."""
    template = spec.template if spec else "default"
    arguments = [
        *("--host", "0.0.0.0", "--port", str(AGENT_PORT)),
        *("--workspace", f"{DATA_DIR}/workspace", "--state-dir", f"{DATA_DIR}/state"),
        *("--token-file", TOKEN_FILE, "--run-as", policy.user, "--template", template),
        *("--claim-file", CLAIM_FILE, *(["--spare"] if spare else [])),
    ]
    command, args = agent_argv(arguments)
    env: list[dict[str, Any]] = []
    if spec is not None:
        env.append({"name": CONVERSATION_ID_ENV, "value": str(spec.conversation_id)})
        env += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": ENV_KEY_PREFIX + key}}}
            for key in sorted(task_env(spec))
        ]
    mounts = [
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "agent", "mountPath": f"{DATA_DIR}/agent"},
    ]
    agent = {
        "name": "agent",
        "image": policy.image,
        "imagePullPolicy": policy.image_pull_policy,
        "command": command,
        "args": args,
        "workingDir": f"{DATA_DIR}/workspace",
        "ports": [{"name": "agent", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(policy, spec),
        "securityContext": _security(["SETUID", "SETGID"]),
        "volumeMounts": [
            *mounts,
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": AGENT_PORT},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",  # the last log lines say why it ended
    }
    prepare = {
        "name": "prepare",
        "image": policy.image,
        "imagePullPolicy": policy.image_pull_policy,
        "command": ["/bin/sh", "-c", _PREPARE.format(user=policy.user)],
        "resources": {"limits": {"memory": str(32 * _MEBI), "cpu": "100m"}},
        "securityContext": _security(["CHOWN"]),
        "volumeMounts": mounts,
    }
    tolerations = [
        {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": policy.node_lost_after}
        for key in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")
    ]
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",  # an agent that ends is EXITED, as on every runtime
        "terminationGracePeriodSeconds": 1,
        "hostname": "sandbox",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "tolerations": tolerations,
        "initContainers": [prepare],
        "containers": [agent],
        "volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "agent", "emptyDir": {"medium": "Memory", "sizeLimit": str(_MEBI)}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": str(policy.tmpfs_bytes)}},
            {
                "name": "token",
                "secret": {
                    "secretName": secret_name,
                    "defaultMode": 0o400,
                    "items": [{"key": "token", "path": "token"}],
                },
            },
        ],
    }


def _pod_template(
    policy: PodPolicy, spec: SandboxSpec | None, secret_name: str, *, spare: bool
) -> dict[str, Any]:
    return {
        "metadata": {"labels": metadata("", policy, pod_labels(policy, spec))["labels"]},
        "spec": pod_spec(policy, spec, secret_name, spare=spare),
    }


# --- the carriers ----------------------------------------------------------------------


def sandbox(policy: PodPolicy, spec: SandboxSpec) -> dict[str, Any]:
    """A cold conversation's ``Sandbox`` (one replica, no Service: the gateway reaches the pod IP)."""
    name = object_name(spec.conversation_id)
    return {
        "apiVersion": SANDBOX_API,
        "kind": "Sandbox",
        "metadata": metadata(
            name, policy, {CONVERSATION_ID: str(spec.conversation_id), ROLE: "sandbox"}, spec
        ),
        "spec": {"podTemplate": _pod_template(policy, spec, name, spare=False)},
    }


def pod(policy: PodPolicy, spec: SandboxSpec) -> dict[str, Any]:
    """The ``pods`` mode's sandbox: a plain Pod (a spare gets its own claim secret: its Secret)."""
    name = object_name(spec.conversation_id)
    labels = pod_labels(policy, spec) | {CONVERSATION_ID: str(spec.conversation_id)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(name, policy, labels, spec),
        "spec": pod_spec(policy, spec, name, spare=spec.pool is not None),
    }


def sandbox_template(policy: PodPolicy, template: str) -> dict[str, Any]:
    """A pool's ``SandboxTemplate``: spares of ``template`` with the installation's claim secret.
    Its NetworkPolicy is the installation's own (Unmanaged), and no claim may set env."""
    return {
        "apiVersion": EXTENSIONS_API,
        "kind": "SandboxTemplate",
        "metadata": metadata(pool_name(policy.install, template), policy, {ROLE: "pool"}),
        "spec": {
            "podTemplate": _pod_template(policy, None, claim_secret_name(policy.install), spare=True),
            "networkPolicyManagement": "Unmanaged",
            "envVarsInjectionPolicy": "Disallowed",
        },
    }


def warm_pool(policy: PodPolicy, template: str, replicas: int) -> dict[str, Any]:
    name = pool_name(policy.install, template)
    return {
        "apiVersion": EXTENSIONS_API,
        "kind": "SandboxWarmPool",
        "metadata": metadata(name, policy, {ROLE: "pool"}),
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": name}},
    }


def sandbox_claim(policy: PodPolicy, spec: SandboxSpec) -> dict[str, Any]:
    """A spare made ahead (``spec.pool`` set): a claim on its template ("default": a sandbox of
    any warm pool of it, else one made from it). No env: env on a claim forces a cold start."""
    assert spec.pool is not None
    name = pool_name(policy.install, spec.pool)
    return {
        "apiVersion": EXTENSIONS_API,
        "kind": "SandboxClaim",
        "metadata": metadata(
            object_name(spec.conversation_id),
            policy,
            {CONVERSATION_ID: str(spec.conversation_id), ROLE: "spare"},
            spec,
        ),
        "spec": {"sandboxTemplateRef": {"name": name}, "warmpool": "default"},
    }


# --- the installation's NetworkPolicies ------------------------------------------------


def network_policies(policy: PodPolicy) -> list[dict[str, Any]]:
    """Every sandbox pod: ingress from the gateway's pods to the agent's port only, no egress.
    Those labelled ``internet``: egress to public addresses and to DNS, not to the cluster."""
    everyone, online = policy_names(policy.install)
    sandboxes = {"matchLabels": metadata("", policy, {ROLE: "sandbox"})["labels"]}
    return [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(everyone, policy, {ROLE: "pool"}),
            "spec": {
                "podSelector": sandboxes,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": policy.gateway_labels}}],
                        "ports": [{"protocol": "TCP", "port": AGENT_PORT}],
                    }
                ],
                "egress": [],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": metadata(online, policy, {ROLE: "pool"}),
            "spec": {
                "podSelector": {"matchLabels": sandboxes["matchLabels"] | {INTERNET: "true"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]},
                    {
                        "to": [
                            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    },
                ],
            },
        },
    ]
