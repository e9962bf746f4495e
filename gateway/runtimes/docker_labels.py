"""The labels of the Docker runtime's objects: the registry of an installation.

Everything a restarted gateway needs is on its containers, but the token (see
:mod:`gateway.runtimes.docker_token`): the names of each conversation's objects, the labels
they carry, the engine filters that find them, and the :class:`SandboxSpec` read back from a
sandbox container's labels. Pure functions of the spec, with no engine calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gateway.runtimes.base import DEFAULT_TEMPLATE, ResourceLimits, SandboxSpec
from sandbox_agent.protocol import AGENT_TOKEN_ENV, RESERVED_ENV_PREFIX

__all__ = [
    "AGENT_SOCKET_PATH",
    "CONVERSATION_ID",
    "CPUS",
    "CREATED_AT",
    "EGRESS",
    "ENV_KEYS",
    "IDLE_TIMEOUT",
    "IMAGE_VERSION",
    "INSTALL",
    "INTERNET",
    "MEMORY",
    "NETWORK",
    "NO_NETWORK",
    "ON_IDLE",
    "OWNER",
    "PIDS",
    "POOL",
    "RELAY",
    "ROLE",
    "SANDBOX",
    "TEMPLATE",
    "TITLE",
    "Names",
    "common_labels",
    "install_filter",
    "sandbox_labels",
    "spec_from_container",
    "task_env",
]

# Labels: every object of a conversation carries the first five.
INSTALL = "convoy.install"
CONVERSATION_ID = "convoy.conversation-id"
OWNER = "convoy.owner"
CREATED_AT = "convoy.created-at"
TITLE = "convoy.title"
IMAGE_VERSION = "convoy.image-version"
ROLE = "convoy.role"  # on containers: "sandbox" or "relay"
INTERNET = "convoy.internet"
EGRESS = "convoy.egress"  # the allow-list, JSON; absent: none
IDLE_TIMEOUT = "convoy.idle-timeout"
MEMORY = "convoy.limits.memory-bytes"
CPUS = "convoy.limits.cpus"
PIDS = "convoy.limits.pids"
ENV_KEYS = "convoy.env-keys"
ON_IDLE = "convoy.on-idle"  # what the gateway does with it once idle
POOL = "convoy.pool"  # on a spare's sandbox: the pool it was made for (labels stay: see claim_spec)
TEMPLATE = "convoy.template"  # on sandboxes: the template they run; on images: the template they are
NETWORK = "convoy.network"  # on sandboxes with no network at all: "none" (reached over a socket, no relay)
NO_NETWORK = "none"
AGENT_SOCKET_PATH = "convoy.agent-socket"  # on those: the host path of the agent's socket
SANDBOX, RELAY = "sandbox", "relay"


@dataclass(frozen=True)
class Names:
    """Engine names of one conversation's objects; the volume and network share the sandbox's."""

    sandbox: str
    relay: str

    @classmethod
    def of(cls, install: str, conversation_id: UUID) -> Names:
        base = f"convoy-{install}-{conversation_id}"
        return cls(sandbox=base, relay=f"{base}-relay")

    @property
    def volume(self) -> str:
        return self.sandbox

    @property
    def network(self) -> str:
        return self.sandbox


def install_filter(install: str, **extra: str) -> dict[str, list[str]]:
    """Engine list filters: objects of ``install`` (and ``extra`` labels)."""
    return {"label": [f"{INSTALL}={install}", *(f"{key}={value}" for key, value in extra.items())]}


def common_labels(spec: SandboxSpec, install: str) -> dict[str, str]:
    return {
        INSTALL: install,
        CONVERSATION_ID: str(spec.conversation_id),
        OWNER: spec.owner,
        CREATED_AT: spec.created_at.isoformat(),
        TITLE: spec.title,
    }


def sandbox_labels(spec: SandboxSpec, install: str, image_version: str) -> dict[str, str]:
    """Everything :func:`spec_from_container` needs to rebuild ``spec`` (but the token)."""
    labels = common_labels(spec, install)
    labels |= {
        ROLE: SANDBOX,
        IMAGE_VERSION: image_version,
        INTERNET: "true" if spec.internet else "false",
        ENV_KEYS: json.dumps(sorted(task_env(spec))),
        ON_IDLE: spec.on_idle,
        TEMPLATE: spec.template,
    }
    optional = {
        IDLE_TIMEOUT: spec.idle_timeout,
        MEMORY: spec.limits.memory_bytes,
        CPUS: spec.limits.cpus,
        PIDS: spec.limits.pids,
    }
    labels |= {key: str(value) for key, value in optional.items() if value is not None}
    if spec.egress is not None:
        labels[EGRESS] = json.dumps(list(spec.egress))
    if spec.pool is not None:
        labels[POOL] = spec.pool
    return labels


def spec_from_container(info: dict[str, Any], token: str | None) -> SandboxSpec | None:
    """The spec of a sandbox container (``inspect`` output) with its ``token`` (read from
    :data:`TOKEN_FILE`); ``None`` when its labels are not ours or no token is known."""
    config = info.get("Config") or {}
    labels: dict[str, str] = config.get("Labels") or {}
    env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
    try:
        keys: list[str] = json.loads(labels.get(ENV_KEYS, "[]"))
        egress: list[str] | None = json.loads(labels[EGRESS]) if EGRESS in labels else None
        return SandboxSpec(
            conversation_id=UUID(labels[CONVERSATION_ID]),
            owner=labels[OWNER],
            title=labels.get(TITLE, ""),
            token=token or env[AGENT_TOKEN_ENV],  # the Env: sandboxes of older gateways only
            created_at=datetime.fromisoformat(labels[CREATED_AT]),
            env={key: env[key] for key in keys if key in env},
            limits=ResourceLimits(
                memory_bytes=_int(labels.get(MEMORY)),
                cpus=_float(labels.get(CPUS)),
                pids=_int(labels.get(PIDS)),
            ),
            internet=labels.get(INTERNET) == "true",
            idle_timeout=_float(labels.get(IDLE_TIMEOUT)),
            egress=None if egress is None else tuple(str(entry) for entry in egress),
            on_idle=labels.get(ON_IDLE, "delete"),
            pool=labels.get(POOL),
            template=labels.get(TEMPLATE, DEFAULT_TEMPLATE),
        )
    except (KeyError, ValueError, TypeError):
        return None


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


def task_env(spec: SandboxSpec) -> dict[str, str]:
    """The spec's env for the tasks (the swarm runtime sets it the same way)."""
    # The agent's own variables are the runtime's to set, never the caller's.
    return {key: value for key, value in spec.env.items() if not key.upper().startswith(RESERVED_ENV_PREFIX)}
