"""Gateway settings: every knob, from the environment with the prefix ``CONVOY_``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RuntimeName = Literal["auto", "process", "docker"]
DockerReach = Literal["auto", "published", "network"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVOY_", extra="ignore")

    # --- serving ----------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    runtime: RuntimeName = "auto"
    access_log: bool = Field(False, description="Log every request (costs throughput).")
    install: str = Field(
        "default",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$",
        description="Installation name: two gateways on one engine never touch each other's.",
    )

    # --- auth -------------------------------------------------------------------
    api_keys: str = Field("", description="Comma-separated principal:key pairs for users.")
    admin_keys: str = Field("", description="Comma-separated admin keys.")
    cookie_name: str = "convoy_key"

    # --- lifecycle --------------------------------------------------------------
    max_conversations: int = Field(200, ge=1)
    max_conversations_per_user: int = Field(20, ge=1)
    idle_timeout: float = Field(1800.0, gt=0, description="Default idle seconds before a reap.")
    max_idle_timeout: float = Field(7 * 24 * 3600.0, gt=0)
    reap_interval: float = Field(10.0, gt=0)
    reconcile_interval: float = Field(30.0, gt=0)
    start_timeout: float = Field(60.0, gt=0)
    error_retention: float = Field(600.0, ge=0, description="Seconds a failed conversation stays visible.")

    # --- proxying ---------------------------------------------------------------
    proxy_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for an agent's answer (file downloads stream without one)."
    )
    proxy_connect_timeout: float = Field(5.0, gt=0)
    firehose_queue_size: int = Field(10_000, ge=1, description="Frames a firehose client may lag behind.")
    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)

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
    docker_stop_grace: float = Field(5.0, ge=0)
    docker_subnet_pool: str = Field(
        "10.213.0.0/16",
        description="IPv4 range the per-conversation networks (a /29 each) are carved from; "
        "it must not overlap the host's own networks.",
    )

    @field_validator("docker_subnet_pool")
    @classmethod
    def _subnet_pool(cls, value: str) -> str:
        network = ipaddress.IPv4Network(value)  # ValueError: not an IPv4 network
        if network.prefixlen > 28:
            raise ValueError("docker_subnet_pool must hold at least two /29 subnets")
        return str(network)

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    def user_keys(self) -> dict[str, str]:
        """``{key: principal}`` from ``api_keys``. Raises ValueError on a malformed pair."""
        keys: dict[str, str] = {}
        for pair in filter(None, (part.strip() for part in self.api_keys.split(","))):
            principal, sep, key = pair.partition(":")
            if not sep or not principal or not key:
                raise ValueError(f"CONVOY_API_KEYS entry {pair!r} is not principal:key")
            keys[key] = principal
        return keys

    def admin_key_set(self) -> frozenset[str]:
        return frozenset(filter(None, (part.strip() for part in self.admin_keys.split(","))))

    @property
    def local_mode(self) -> bool:
        """No keys configured: single local user, loopback only."""
        return not self.api_keys and not self.admin_keys
