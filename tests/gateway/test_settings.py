"""gateway/settings: every variable's name, default and validation, as the gateway has always
read them (the fields are grouped in modules; this pins what the environment sees)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings

#: Every setting and its default (``CONVOY_`` + the upper-cased name is its variable).
DEFAULTS: dict[str, object] = {
    "host": "127.0.0.1",
    "port": 8000,
    "runtime": "auto",
    "access_log": False,
    "install": "default",
    "api_keys": "",
    "admin_keys": "",
    "cookie_name": "convoy_key",
    "max_conversations": 200,
    "max_conversations_per_user": 20,
    "idle_timeout": 1800.0,
    "max_idle_timeout": 604800.0,
    "reap_interval": 10.0,
    "reconcile_interval": 30.0,
    "sync_interval": 2.0,
    "limit_clock_margin": 1.0,
    "start_timeout": 60.0,
    "error_retention": 600.0,
    "create_burst": 20,
    "create_rate": 1.0,
    "max_failed_starts": 5,
    "failed_start_window": 300.0,
    "on_idle": "delete",
    "paused_ttl": 604800.0,
    "max_snapshots_per_user": 20,
    "pool_size": None,
    "pool_sizes": "",
    "pool_max_spares": 8,
    "pool_refill_concurrency": 1,
    "max_body_bytes": 1048576,
    "max_header_bytes": 65536,
    "header_timeout": 10.0,
    "max_connections": 2048,
    "proxy_timeout": 60.0,
    "proxy_connect_timeout": 5.0,
    "proxy_stall_timeout": 60.0,
    "proxy_max_url_bytes": 8192,
    "proxy_max_header_bytes": 6144,
    "firehose_queue_size": 10000,
    "ws_max_message_bytes": 16777216,
    "ws_send_buffer_bytes": 4194304,
    "ws_stall_timeout": 10.0,
    "firehose_queue_bytes": 8388608,
    "ws_close_timeout": 10.0,
    "tcp_user_timeout": 120.0,
    "max_websockets_per_principal": 32,
    "preview_domain": "",
    "preview_scheme": "https",
    "preview_port": None,
    "preview_secret": "",
    "preview_link_max_ttl": 604800,
    "state_dir": Path.home() / ".convoy",
    "process_stop_grace": 5.0,
    "docker_url": None,
    "docker_image": "convoy-sandbox:latest",
    "docker_reach": "auto",
    "docker_network": "convoy-sandboxes",
    "docker_user": "10001:10001",
    "docker_read_only": True,
    "docker_drop_capabilities": True,
    "docker_no_new_privileges": True,
    "docker_init": True,
    "docker_memory": 536870912,
    "docker_cpus": 1.0,
    "docker_pids": 256,
    "docker_tmpfs_bytes": 67108864,
    "docker_stop_grace": 0.0,
    "docker_relayless": True,
    "docker_socket_dir": None,
    "docker_subnet_pool": "10.213.0.0/16",
    "kubernetes_kubeconfig": None,
    "kubernetes_namespace": None,
    "kubernetes_mode": "sandboxes",
    "kubernetes_image": "convoy-sandbox:latest",
    "kubernetes_image_pull_policy": "IfNotPresent",
    "kubernetes_gateway_labels": "app.kubernetes.io/name=convoy-gateway",
    "kubernetes_memory": 536870912,
    "kubernetes_cpus": 1.0,
    "kubernetes_node_lost_after": 30,
    "kubernetes_warm_replicas": 0,
    "swarm_reach": "auto",
    "swarm_network": "convoy-swarm",
    "swarm_ports": "20000-29999",
    "swarm_constraints": [],
    "swarm_reservation": 0.1,
    "swarm_snapshot_dir": None,
    "metrics_key": "",
    "log_format": "text",
    "default_template": "default",
    "template_context_bytes": 268435456,
    "egress_resolver": "",
    "console_xterm_dir": "/usr/share/nodejs/xterm/lib",
}

#: Values the gateway refuses at start-up, one variable each.
REFUSED = [
    ("CONVOY_PORT", "65536"),
    ("CONVOY_RUNTIME", "lxc"),
    ("CONVOY_INSTALL", "-leading-dash"),
    ("CONVOY_MAX_CONVERSATIONS", "0"),
    ("CONVOY_IDLE_TIMEOUT", "0"),
    ("CONVOY_ON_IDLE", "archive"),
    ("CONVOY_POOL_SIZE", "65"),
    ("CONVOY_POOL_SIZES", "node=2;ci=1"),
    ("CONVOY_MAX_BODY_BYTES", "1023"),
    ("CONVOY_PROXY_MAX_URL_BYTES", "8193"),
    ("CONVOY_PROXY_MAX_HEADER_BYTES", "6145"),
    ("CONVOY_PREVIEW_DOMAIN", "bad_domain"),
    ("CONVOY_PREVIEW_SCHEME", "ftp"),
    ("CONVOY_DOCKER_REACH", "tunnel"),
    ("CONVOY_DOCKER_MEMORY", str(6 * 1024 * 1024 - 1)),
    ("CONVOY_DOCKER_PIDS", "15"),
    ("CONVOY_DOCKER_SUBNET_POOL", "10.0.0.0/29"),
    ("CONVOY_DOCKER_SUBNET_POOL", "not-a-network"),
    ("CONVOY_EGRESS_RESOLVER", "dns.example:53"),
    ("CONVOY_EGRESS_RESOLVER", "10.0.0.1:70000"),
    ("CONVOY_KUBERNETES_MODE", "jobs"),
    ("CONVOY_KUBERNETES_GATEWAY_LABELS", "no-equals-sign"),
    ("CONVOY_SWARM_PORTS", "20000"),
    ("CONVOY_SWARM_RESERVATION", "1.5"),
    ("CONVOY_LOG_FORMAT", "xml"),
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``CONVOY_`` variable of the caller's environment leaks into a test."""
    for name in [name for name in os.environ if name.upper().startswith("CONVOY_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_every_setting_and_its_default(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert set(Settings.model_fields) == set(DEFAULTS), "a setting was added or lost"
    assert {name: getattr(settings, name) for name in DEFAULTS} == DEFAULTS


def test_each_variable_is_read_by_its_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVOY_PORT", "9001")
    clean_env.setenv("convoy_docker_cpus", "0.5")  # any case
    clean_env.setenv("CONVOY_SWARM_CONSTRAINTS", '["node.role==worker"]')
    clean_env.setenv("CONVOY_DOCKER_SOCKET_DIR", "/srv/sockets")
    clean_env.setenv("CONVOY_NOT_A_SETTING", "ignored")
    settings = Settings()
    assert (settings.port, settings.docker_cpus) == (9001, 0.5)
    assert settings.swarm_constraints == ["node.role==worker"]
    assert settings.docker_socket_dir == Path("/srv/sockets")


@pytest.mark.parametrize(("variable", "value"), REFUSED)
def test_a_bad_value_is_refused(clean_env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    clean_env.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()


def test_values_are_normalised(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVOY_API_KEYS", "  alice:k1, bob:k2 ")
    clean_env.setenv("CONVOY_ADMIN_KEYS", " root1,root2 ")
    clean_env.setenv("CONVOY_METRICS_KEY", " m ")
    clean_env.setenv("CONVOY_EGRESS_RESOLVER", " 10.0.0.53 ")
    clean_env.setenv("CONVOY_DOCKER_SUBNET_POOL", "10.9.0.0/16")
    clean_env.setenv("CONVOY_POOL_SIZES", "node=2, ci = 1")
    settings = Settings()
    assert settings.user_keys() == {"k1": "alice", "k2": "bob"}
    assert settings.admin_key_set() == {"root1", "root2"} and settings.metrics_key == "m"
    assert settings.egress_resolver == "10.0.0.53" and settings.docker_subnet_pool == "10.9.0.0/16"
    assert settings.pool_sizes_by_template() == {"node": 2, "ci": 1}
    assert not settings.local_mode


def test_a_malformed_key_pair_is_refused_when_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVOY_API_KEYS", "alice")
    with pytest.raises(ValueError, match="principal:key"):
        Settings().user_keys()
