"""Gateway settings: every knob, from the environment with the prefix ``CONVOY_``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RuntimeName = Literal["auto", "process", "docker", "swarm", "memory", "kubernetes"]
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
    sync_interval: float = Field(
        2.0,
        gt=0,
        description="Seconds between two listings of the runtime: how soon conversations created, "
        "paused or removed through another gateway of the installation show here (firehose included).",
    )
    limit_clock_margin: float = Field(
        1.0,
        ge=0,
        description="Seconds the gateways of one installation's clocks may differ by; the limits hold "
        "across gateways within it (gateway.limits).",
    )
    start_timeout: float = Field(60.0, gt=0)
    error_retention: float = Field(600.0, ge=0, description="Seconds a failed conversation stays visible.")
    create_burst: int = Field(20, ge=1, description="Creates a principal may make at once (token bucket).")
    create_rate: float = Field(1.0, gt=0, description="Creates per second regained, up to the burst.")
    max_failed_starts: int = Field(
        5, ge=1, description="Failed starts of one principal within failed_start_window before 429."
    )
    failed_start_window: float = Field(300.0, gt=0, description="Seconds a failed start counts.")

    # --- pause, snapshots and forks (gateway.pausing, gateway.snapshots) ----------
    on_idle: Literal["delete", "pause"] = Field(
        "delete", description="What happens to an idle conversation that asked for nothing else."
    )
    paused_ttl: float = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds a paused conversation is kept before it is removed."
    )
    max_snapshots_per_user: int = Field(20, ge=0, description="Snapshots one principal may keep.")

    # --- the pool of ready sandboxes (gateway/pool.py) ---------------------------
    pool_size: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Ready spare sandboxes kept per pool, claimed by a create in one call; unset: "
        "2 on the docker runtime, 0 on the process and memory runtimes.",
    )
    pool_sizes: str = Field(
        "",
        pattern=r"^\s*([a-z0-9][a-z0-9_.-]{0,62}\s*=\s*\d{1,2}\s*(,\s*|$))*$",
        description='Spares of other templates: "node=2,ci=1" (the default template\'s: pool_size).',
    )
    pool_max_spares: int = Field(
        8,
        ge=0,
        description="Spares of all pools together at most. Spares count against no conversation limit "
        "(max_conversations, per user): this bound is theirs.",
    )
    pool_refill_concurrency: int = Field(
        1, ge=1, description="Spares started at once; a refill waits while a user waits on a cold start."
    )

    # --- protection of the server itself ---------------------------------------
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="The gateway's own request bodies (proxied: the agent's limits)."
    )
    max_header_bytes: int = Field(64 * 1024, ge=4096, description="Request line and headers; larger: 431.")
    header_timeout: float = Field(10.0, gt=0, description="Seconds to send a request's head; slower: closed.")
    max_connections: int = Field(2048, ge=1, description="Open connections (HTTP and WebSocket); more: 503.")

    # --- proxying ---------------------------------------------------------------
    proxy_timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for an agent's answer (file downloads stream without one)."
    )
    proxy_connect_timeout: float = Field(5.0, gt=0)
    proxy_stall_timeout: float = Field(
        60.0, gt=0, description="Seconds a proxied answer waits for a client that reads nothing, then ends."
    )
    # The agent's HTTP parser (h11) takes a request head of at most 16 KiB: these two, plus
    # the few headers the gateway adds, stay below it, so the agent never refuses one.
    proxy_max_url_bytes: int = Field(
        8192, ge=1024, le=8192, description="Longest path and query proxied to a sandbox (longer: 414)."
    )
    proxy_max_header_bytes: int = Field(
        6144, ge=1024, le=6144, description="Most header bytes proxied to a sandbox (more: 431)."
    )
    firehose_queue_size: int = Field(10_000, ge=1, description="Frames a firehose client may lag behind.")
    ws_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    ws_send_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes of frames held for one client following a conversation; beyond, the sandbox's "
        "stream waits for it (the sandbox drops it past its own lag limits).",
    )
    ws_stall_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a following client with a full buffer may take nothing before it is closed "
        "with 4008 (too slow; it resumes with after_seq).",
    )
    firehose_queue_bytes: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes a firehose client may lag behind (it cannot slow the others): beyond, 4008.",
    )
    ws_close_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a closing WebSocket client gets to take its last frames and the close frame; "
        "a client that does not read is then left to the server.",
    )
    tcp_user_timeout: float = Field(
        120.0,
        ge=0,
        description="Seconds a client connection may leave the gateway's data unacknowledged (it stopped "
        "reading) before the kernel drops it with all it held; 0: the kernel's default.",
    )
    max_websockets_per_principal: int = Field(
        32, ge=1, description="WebSockets one principal may hold open at once; beyond: refused with 4429."
    )

    # --- preview ports (gateway.preview) ---------------------------------------
    preview_domain: str = Field(
        "",
        pattern=r"^$|^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
        description="Host-based previews (recommended): links are {port}-{id}.<domain>; 'localhost' for "
        "local use (browsers resolve *.localhost to loopback). Empty: path-based links on the API origin. "
        "Requests for {port}-{id}.localhost are routed to previews whatever this says.",
    )
    preview_scheme: Literal["http", "https"] = Field(
        "https", description="Scheme of host-based links (not 'localhost' ones: those use the request's)."
    )
    preview_port: int | None = Field(
        None, ge=1, le=65535, description="Port in host-based links (not 'localhost' ones); unset: none."
    )
    preview_secret: str = Field(
        "",
        repr=False,
        description="HMAC key of signed preview links. Unset: a random one per gateway start (links "
        "die with it); several gateways behind one address need the same one.",
    )
    preview_link_max_ttl: int = Field(7 * 24 * 3600, ge=1, description="Longest expires_in of a link.")

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

    # --- observability (issue 14: metrics, usage, logs) --------------------------
    metrics_key: str = Field(
        "", description="A key that may read GET /metrics (besides admin keys); empty: admins only."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per log line, and one per request (convoy.access)."
    )

    # --- templates (issue 12) ------------------------------------------------------
    default_template: str = Field(
        "default",
        description="The template of a conversation that names none ('default': the runtime's own sandbox, "
        "on docker the docker_image).",
    )
    template_context_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest build context (a tar) POST /template accepts."
    )

    egress_resolver: str = Field(
        "",
        description="DNS server (address or address:port) the relay asks for the names of an egress "
        "allow-list; empty: the resolver of the relay container (the engine's).",
    )

    # --- web console (gateway/console) ---------------------------------------------
    console_xterm_dir: str = Field(
        "/usr/share/nodejs/xterm/lib",
        description="Where xterm.js's CommonJS modules (xterm.js and what it requires) and xterm.css "
        "are installed (Debian: node-xterm); the gateway links them into one browser script. The "
        "console's terminal falls back to a plain text view when they are not there.",
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

    @field_validator("api_keys", "admin_keys", "metrics_key")
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

    def pool_sizes_by_template(self) -> dict[str, int]:
        """``{template: spares}`` from ``pool_sizes`` (its pattern has checked the syntax)."""
        pairs = (part.partition("=") for part in self.pool_sizes.split(",") if part.strip())
        return {name.strip(): int(size) for name, _, size in pairs}

    def admin_key_set(self) -> frozenset[str]:
        return frozenset(filter(None, (part.strip() for part in self.admin_keys.split(","))))

    @property
    def local_mode(self) -> bool:
        """No keys configured: single local user, loopback only."""
        return not self.api_keys and not self.admin_keys
