"""What the Docker runtime asks the engine for, as plain data.

The container configurations of one conversation (its sandbox and its relay): pure
functions of a :class:`ContainerPolicy` (what the settings say every container gets) and
the spec, with no engine calls (and no aiodocker), so they are checked without Docker.
The policy itself is :mod:`gateway.runtimes.docker_policy`, the names and labels (the
registry) :mod:`gateway.runtimes.docker_labels`, the conversation's network
:mod:`gateway.runtimes.docker_networks`; all three are re-exported here.

The token is in no environment: see :mod:`gateway.runtimes.docker_token`.
"""

from __future__ import annotations

from typing import Any

from gateway.runtimes import docker_egress
from gateway.runtimes.base import SandboxSpec
from gateway.runtimes.docker_bundle import TemplateRun, agent_argv, bundle_mount
from gateway.runtimes.docker_labels import (
    AGENT_SOCKET_PATH,
    CONVERSATION_ID,
    CPUS,
    CREATED_AT,
    EGRESS,
    ENV_KEYS,
    IDLE_TIMEOUT,
    IMAGE_VERSION,
    INSTALL,
    INTERNET,
    MEMORY,
    NETWORK,
    NO_NETWORK,
    ON_IDLE,
    OWNER,
    PIDS,
    POOL,
    RELAY,
    ROLE,
    SANDBOX,
    TEMPLATE,
    TITLE,
    Names,
    common_labels,
    install_filter,
    sandbox_labels,
    spec_from_container,
    task_env,
)
from gateway.runtimes.docker_networks import SUBNET_PREFIX, Subnet, free_subnets, network_config
from gateway.runtimes.docker_policy import ContainerPolicy, effective_limits, hardening
from gateway.runtimes.docker_token import AGENT_CAPABILITIES, CLAIM_FILE, DATA_DIR, TOKEN_FILE
from sandbox_agent.protocol import CONVERSATION_ID_ENV

# One namespace for the runtimes that speak to the engine (``docker_config as cfg``): the
# containers are defined here, the policy, the labels and the network (re-exported) in their own modules.
__all__ = [
    "AGENT_PORT",
    "AGENT_SOCKET",
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
    "RELAY_SCRIPT",
    "RELAY_SYSCTLS",
    "ROLE",
    "SANDBOX",
    "SOCKET_DIR",
    "SUBNET_PREFIX",
    "TEMPLATE",
    "TITLE",
    "ContainerPolicy",
    "Names",
    "Subnet",
    "agent_arguments",
    "common_labels",
    "effective_limits",
    "exit_reason",
    "free_subnets",
    "install_filter",
    "network_config",
    "published_url",
    "relay_config",
    "sandbox_config",
    "sandbox_labels",
    "spec_from_container",
    "task_env",
]

AGENT_PORT = 8080
RELAY_SCRIPT = "/opt/convoy-relay/relay.pyc"  # images/sandbox/relay.py, compiled in the image
_RELAY_MEMORY = 64 * 1024 * 1024
#: The relay's network namespace routes nothing. A new namespace inherits the host's
#: ``ip_forward=1`` (Docker's), and the relay is the one member of both the sandbox's network
#: and the front network: with forwarding on, a frame sent to its address with another
#: destination (by anything on the front network, or by the sandbox were it ever given the
#: relay as next hop) would be routed between the two. ``default`` covers the interface of
#: the sandbox's network, which may come up after the first.
RELAY_SYSCTLS = {"net.ipv4.ip_forward": "0", "net.ipv4.conf.default.forwarding": "0"}

#: Where a sandbox with no network finds its socket directory (mounted from the host), and its socket.
SOCKET_DIR = "/run/convoy-agent"
AGENT_SOCKET = f"{SOCKET_DIR}/agent.sock"
#: Where a sandbox with no network is handed its token (see gateway.runtimes.docker_sockets).
HANDED_TOKEN = f"{SOCKET_DIR}/token"


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
    host = hardening(policy) | {
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
    host = hardening(policy) | {
        "NetworkMode": front_network,
        "Memory": _RELAY_MEMORY,
        "MemorySwap": _RELAY_MEMORY,
        "NanoCpus": int(cpus * 1e9),
        "PidsLimit": 16,
        "RestartPolicy": {"Name": "no"},
        "Sysctls": dict(RELAY_SYSCTLS),
    }
    command = ["python3", "-I", "-S", RELAY_SCRIPT, str(AGENT_PORT), subnet.sandbox_ip, str(AGENT_PORT)]
    if spec is not None and spec.egress is not None:
        egress = docker_egress.relay_host_config()
        host |= egress | {"Sysctls": host["Sysctls"] | egress["Sysctls"]}
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
