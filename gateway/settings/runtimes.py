"""The runtimes on one host: the process runtime and Docker (whose ``docker_*`` settings the
swarm runtime uses too), with the egress resolver of Docker's relay."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

__all__ = ["DockerReach", "HostRuntimeSettings"]

DockerReach = Literal["auto", "published", "network"]


class HostRuntimeSettings(BaseModel):
    """The process and Docker runtimes."""

    # --- process runtime --------------------------------------------------------
    state_dir: Path = Field(Path.home() / ".convoy", description="Process runtime: where sandboxes live.")
    process_stop_grace: float = Field(5.0, ge=0, description="Process runtime: SIGTERM to SIGKILL.")

    # --- docker runtime ---------------------------------------------------------
    docker_url: str | None = Field(None, description="Engine URL; DOCKER_HOST or the local socket if unset.")
    docker_image: str = "convoy-sandbox:latest"
    docker_reach: DockerReach = Field(
        "auto",
        description="published: a port on 127.0.0.1 (gateway on the host); network: by name on "
        "docker_network (gateway in a container); auto: network when running in a container.",
    )
    docker_network: str = Field("convoy-sandboxes", description="Shared with a containerised gateway.")
    docker_user: str = Field(
        "10001:10001",
        description="Numeric UID:GID the sandbox's tasks run as (and its agent, once it has read its token).",
    )
    docker_read_only: bool = True
    docker_drop_capabilities: bool = True
    docker_no_new_privileges: bool = True
    docker_init: bool = True
    docker_memory: int = Field(512 * 1024 * 1024, ge=6 * 1024 * 1024, description="Bytes.")
    docker_cpus: float = Field(1.0, gt=0)
    docker_pids: int = Field(256, ge=16)
    docker_tmpfs_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    # --- docker teardown (issue 15) ------------------------------------------------
    docker_stop_grace: float = Field(
        0.0,
        ge=0,
        description="Seconds a sandbox being removed gets between SIGTERM and SIGKILL; 0 (the default): "
        "removed at once. Its volume goes with it, so a graceful stop saves nothing, and it was "
        "most of DELETE's time (its tasks get the same kill either way).",
    )
    # --- docker: sandboxes with no network (issue 15) ----------------------------------
    docker_relayless: bool = Field(
        True,
        description="A sandbox with neither internet nor an egress list (pool spares too) runs with no "
        "network at all (only loopback), its agent reached over a Unix socket in docker_socket_dir: "
        "no relay container. False: every sandbox gets a network of its own and a relay.",
    )
    docker_socket_dir: Path | None = Field(
        None,
        description="Host directory holding one directory per network-less sandbox (its agent's "
        "socket, mounted into that sandbox only); made 0700. Unset: state_dir/sockets. A gateway in "
        "a container mounts it at the same path (the engine resolves it on the host); every gateway of "
        "an installation uses the same one.",
    )
    docker_subnet_pool: str = Field(
        "10.213.0.0/16",
        description="IPv4 range the per-conversation networks (a /29 each) are carved from; "
        "it must not overlap the host's own networks.",
    )

    egress_resolver: str = Field(
        "",
        description="DNS server (address or address:port) the relay asks for the names of an egress "
        "allow-list; empty: the resolver of the relay container (the engine's).",
    )

    @field_validator("egress_resolver")
    @classmethod
    def _resolver(cls, value: str) -> str:
        value = value.strip()
        if value:
            host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "53")
            ipaddress.ip_address(host)  # ValueError: not an address
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"egress_resolver: {port!r} is not a port")
        return value

    @field_validator("docker_subnet_pool")
    @classmethod
    def _subnet_pool(cls, value: str) -> str:
        network = ipaddress.IPv4Network(value)  # ValueError: not an IPv4 network
        if network.prefixlen > 28:
            raise ValueError("docker_subnet_pool must hold at least two /29 subnets")
        return str(network)
