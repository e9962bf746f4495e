"""What the Docker runtime asks the engine for, as plain data.

Names, labels, the network/volume/container configurations of one
conversation, and the :class:`SandboxSpec` read back from a container: pure
functions of a :class:`ContainerPolicy` (what the settings say every container
gets) and the spec, with no engine calls (and no aiodocker), so they are
checked without Docker. The labels are the registry: everything a restarted
gateway needs is on the containers, except the token.

The token is in no environment: see :mod:`gateway.runtimes.docker_token`.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from gateway.runtimes import docker_egress
from gateway.runtimes.base import DEFAULT_TEMPLATE, ResourceLimits, SandboxSpec
from gateway.runtimes.docker_bundle import TemplateRun, agent_argv, bundle_mount
from gateway.runtimes.docker_token import AGENT_CAPABILITIES, CLAIM_FILE, DATA_DIR, TOKEN_FILE
from sandbox_agent.protocol import AGENT_TOKEN_ENV, CONVERSATION_ID_ENV, RESERVED_ENV_PREFIX

AGENT_PORT = 8080
RELAY_SCRIPT = "/opt/convoy-relay/relay.pyc"  # images/sandbox/relay.py, compiled in the image
SUBNET_PREFIX = 29  # gateway address (unused), the sandbox, the relay
_LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}}
_RELAY_MEMORY = 64 * 1024 * 1024

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
#: Where a sandbox with no network finds its socket directory (mounted from the host), and its socket.
SOCKET_DIR = "/run/convoy-agent"
AGENT_SOCKET = f"{SOCKET_DIR}/agent.sock"
#: Where a sandbox with no network is handed its token (see gateway.runtimes.docker_sockets).
HANDED_TOKEN = f"{SOCKET_DIR}/token"
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


# --- the conversation's network ---------------------------------------------------


@dataclass(frozen=True)
class Subnet:
    network: ipaddress.IPv4Network

    @property
    def sandbox_ip(self) -> str:
        return str(self.network.network_address + 2)

    @property
    def relay_ip(self) -> str:
        return str(self.network.network_address + 3)


def free_subnets(pool: str, used: Iterable[str]) -> Iterator[Subnet]:
    """The /29 subnets of ``pool`` that overlap none of ``used``, in random order
    (so gateways sharing an engine rarely race for the same one)."""
    whole = ipaddress.IPv4Network(pool)
    taken = [net for net in (ipaddress.ip_network(text, strict=False) for text in used) if net.version == 4]
    taken = [net for net in taken if net.overlaps(whole)]
    count = 2 ** (SUBNET_PREFIX - whole.prefixlen)
    step = 2 ** (32 - SUBNET_PREFIX)
    for index in random.sample(range(count), count):
        candidate = ipaddress.IPv4Network((int(whole.network_address) + index * step, SUBNET_PREFIX))
        if not any(candidate.overlaps(net) for net in taken):
            yield Subnet(candidate)


def network_config(name: str, labels: dict[str, str], subnet: Subnet, internet: bool) -> dict[str, Any]:
    """The conversation's own bridge. Without internet: internal (no route out) and
    with no host address on the bridge, so neither the host nor anything beyond
    it can be reached; only the sandbox and its relay live there."""
    options = {"com.docker.network.bridge.enable_icc": "true"}
    if not internet:
        options["com.docker.network.bridge.inhibit_ipv4"] = "true"
    return {
        "Name": name,
        "Driver": "bridge",
        "Internal": not internet,
        "CheckDuplicate": True,
        "Labels": labels,
        "Options": options,
        "IPAM": {
            "Driver": "default",
            "Config": [{"Subnet": str(subnet.network), "Gateway": str(subnet.network.network_address + 1)}],
        },
    }


# --- containers ---------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPolicy:
    """What every container of the installation gets (the ``docker_*`` settings)."""

    image: str
    user: str
    #: Limits of a sandbox whose spec sets none (and the relay's CPU share).
    default_limits: ResourceLimits
    read_only: bool = True
    tmpfs_bytes: int = 64 * 1024 * 1024
    init: bool = True
    drop_capabilities: bool = True
    no_new_privileges: bool = True
    #: Where the egress enforcer resolves allowed names (``host:port``; empty: the relay's own resolver).
    egress_resolver: str = ""


def effective_limits(defaults: ResourceLimits, requested: ResourceLimits) -> ResourceLimits:
    """``requested``, with ``defaults`` for what it leaves unset."""
    return ResourceLimits(
        memory_bytes=requested.memory_bytes or defaults.memory_bytes,
        cpus=requested.cpus or defaults.cpus,
        pids=requested.pids or defaults.pids,
    )


def _hardening(policy: ContainerPolicy) -> dict[str, Any]:
    host: dict[str, Any] = {"ReadonlyRootfs": policy.read_only, "LogConfig": _LOG_CONFIG}
    if policy.drop_capabilities:
        host["CapDrop"] = ["ALL"]
    if policy.no_new_privileges:
        host["SecurityOpt"] = ["no-new-privileges"]
    return host


def sandbox_config(
    policy: ContainerPolicy,
    spec: SandboxSpec,
    labels: dict[str, str],
    names: Names,
    subnet: Subnet | None,
    template: TemplateRun | None = None,
    socket_dir: str | None = None,
) -> dict[str, Any]:
    """The sandbox container; ``template``: of a template other than the default. With
    ``socket_dir`` (a host directory; ``subnet`` is then ``None``): no network at all, only
    loopback; the agent listens on :data:`AGENT_SOCKET` in that directory, mounted."""
    limits = effective_limits(policy.default_limits, spec.limits)
    assert limits.memory_bytes is not None and limits.cpus is not None
    env = (
        (template.env if template else {}) | task_env(spec) | {CONVERSATION_ID_ENV: str(spec.conversation_id)}
    )
    if spec.egress is not None and subnet is not None:
        env |= docker_egress.sandbox_env(subnet.relay_ip)
    socket_mount = {"Type": "bind", "Source": socket_dir, "Target": SOCKET_DIR}
    host = _hardening(policy) | {
        "CapAdd": AGENT_CAPABILITIES,
        "Init": policy.init,
        "Mounts": [
            {"Type": "volume", "Source": names.volume, "Target": DATA_DIR},
            *([bundle_mount(template.bundle_volume)] if template else []),
            *([socket_mount] if socket_dir is not None else []),
        ],
        "NetworkMode": names.network if socket_dir is None else NO_NETWORK,
        "Memory": limits.memory_bytes,
        "MemorySwap": limits.memory_bytes,  # no swap: the limit is the limit
        "NanoCpus": int(limits.cpus * 1e9),
        "PidsLimit": limits.pids,
        "RestartPolicy": {"Name": "no"},
    }
    if spec.egress is not None and subnet is not None:
        host |= docker_egress.sandbox_host_config(subnet.relay_ip)
    if policy.read_only:
        host["Tmpfs"] = {"/tmp": f"rw,nosuid,nodev,size={policy.tmpfs_bytes},mode=1777"}
    uds = AGENT_SOCKET if socket_dir is not None else None
    # The default image's sandbox with no network is handed its token in its socket directory;
    # a template's gets it (and its /data) through the engine.
    handed = HANDED_TOKEN if uds is not None and template is None else None
    arguments = agent_arguments(policy, spec, templated=template is not None, uds=uds, handed=handed)
    entrypoint, command = agent_argv(arguments)
    config: dict[str, Any] = {
        "Image": template.image if template else policy.image,
        "Entrypoint": entrypoint,  # the image's own ENTRYPOINT and CMD are not the agent
        "Cmd": command,
        "WorkingDir": f"{DATA_DIR}/workspace",
        "StopSignal": "SIGTERM",
        "User": "0:0",  # for the agent's start-up only: see gateway.runtimes.docker_token
        "Hostname": "sandbox",
        "Env": [f"{key}={value}" for key, value in env.items()],
        "Labels": labels,
        "ExposedPorts": {f"{AGENT_PORT}/tcp": {}},
        "Healthcheck": {"Test": ["NONE"]},  # the runtime polls /ready itself
        "HostConfig": host,
    }
    if socket_dir is not None:
        del config["ExposedPorts"]
        host_socket = f"{socket_dir}/{AGENT_SOCKET.rsplit('/', 1)[1]}"
        config["Labels"] = labels | {NETWORK: NO_NETWORK, AGENT_SOCKET_PATH: host_socket}
    elif subnet is not None:
        config["NetworkingConfig"] = {
            "EndpointsConfig": {names.network: {"IPAMConfig": {"IPv4Address": subnet.sandbox_ip}}}
        }
    return config


def agent_arguments(
    policy: ContainerPolicy,
    spec: SandboxSpec,
    *,
    templated: bool = False,
    token_file: str = TOKEN_FILE,
    uds: str | None = None,
    handed: str | None = None,
) -> list[str]:
    """The agent's command-line arguments in a sandbox (Docker's and Swarm's): where it listens
    (``uds``: that Unix socket, else TCP on every address), where its workspace, state, token
    (``handed``: where it is handed over for its first start) and claim are, the user its tasks
    run as."""
    listen = ("--uds", uds) if uds is not None else ("--host", "0.0.0.0", "--port", str(AGENT_PORT))
    return [
        *listen,
        *("--workspace", f"{DATA_DIR}/workspace", "--state-dir", f"{DATA_DIR}/state"),
        *("--token-file", token_file, *(("--handed-token", handed) if handed else ())),
        *("--run-as", policy.user, "--template", spec.template),
        *("--claim-file", CLAIM_FILE, *(["--spare"] if spec.pool is not None else [])),
        # In a template the agent's interpreter is not the tasks': theirs is the image's.
        *(("--task-python", "python3") if templated else ()),
    ]


def relay_config(
    policy: ContainerPolicy,
    labels: dict[str, str],
    subnet: Subnet,
    front_network: str,
    publish: bool,
    spec: SandboxSpec | None = None,
) -> dict[str, Any]:
    """The relay starts on ``front_network`` (where the gateway reaches it); the
    runtime then connects it to the conversation's network at ``subnet.relay_ip``.
    With an egress allow-list in ``spec``, it also runs the enforcer (its companion)."""
    cpus = policy.default_limits.cpus or 1.0
    host = _hardening(policy) | {
        "NetworkMode": front_network,
        "Memory": _RELAY_MEMORY,
        "MemorySwap": _RELAY_MEMORY,
        "NanoCpus": int(cpus * 1e9),
        "PidsLimit": 16,
        "RestartPolicy": {"Name": "no"},
    }
    command = ["python3", "-I", "-S", RELAY_SCRIPT, str(AGENT_PORT), subnet.sandbox_ip, str(AGENT_PORT)]
    if spec is not None and spec.egress is not None:
        host |= docker_egress.relay_host_config()
        resolver = policy.egress_resolver
        command += ["--", *docker_egress.relay_companion(resolver, spec, subnet.relay_ip, subnet.sandbox_ip)]
    if publish:
        host["PortBindings"] = {f"{AGENT_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    return {
        "Image": policy.image,
        "Cmd": command,
        "User": policy.user,
        "Labels": labels | {ROLE: RELAY},
        "ExposedPorts": {f"{AGENT_PORT}/tcp": {}},
        "Healthcheck": {"Test": ["NONE"]},
        "StopSignal": "SIGTERM",
        "HostConfig": host,
    }


def published_url(info: dict[str, Any]) -> str | None:
    """``http://127.0.0.1:PORT`` of a relay's published agent port (``inspect`` output)."""
    ports = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{AGENT_PORT}/tcp") or []
    for binding in ports:
        if binding.get("HostPort"):
            return f"http://127.0.0.1:{binding['HostPort']}"
    return None


def exit_reason(state: dict[str, Any]) -> str:
    """Why a container ended, in words, from ``inspect``'s ``State``."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return f"the sandbox ran out of memory and was killed (OOM, exit code {code})"
    if state.get("Error"):
        return f"the sandbox failed: {state['Error']} (exit code {code})"
    return f"the sandbox exited with code {code}"
