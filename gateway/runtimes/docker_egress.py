"""What an egress allow-list adds to a conversation's containers, as plain data.

The sandbox stays alone on its internal network (no route out). Its relay, the
one other member of that network, runs the enforcer
(``images/sandbox/egress.py``) beside the agent relay: an HTTP(S) proxy and a
DNS server, both bound to the relay's address on the conversation's network
only, that serve the allowed names and networks and refuse everything else. The
sandbox is pointed at them: ``HTTP_PROXY``/``HTTPS_PROXY`` in its environment,
and the relay as the upstream of the engine's resolver in the container
(``Dns``), which is the only resolver it can reach. Nothing of this runs in the
sandbox, so no task can turn it off.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.runtimes.base import SandboxSpec

EGRESS_SCRIPT = "/opt/convoy-relay/egress.py"
EGRESS_PYTHON = "/opt/convoy/bin/python"  # the image's venv: h11 and dnspython
PROXY_PORT = 3128
DNS_PORT = 53  # the engine's resolver forwards to port 53 only
#: The relay's memory with the enforcer beside it (asyncio, h11 and dnspython loaded).
RELAY_MEMORY = 96 * 1024 * 1024  # measured: ~11 MiB relay + ~27 MiB enforcer (RSS)
_NO_PROXY = "localhost,127.0.0.1,::1"


def sandbox_env(relay_ip: str) -> dict[str, str]:
    """The proxy variables of a sandbox with an allow-list (both spellings: tools read either)."""
    proxy = f"http://{relay_ip}:{PROXY_PORT}"
    names = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    return {name: proxy for name in names} | {"NO_PROXY": _NO_PROXY, "no_proxy": _NO_PROXY}


def sandbox_host_config(relay_ip: str) -> dict[str, Any]:
    """The relay as the sandbox's only DNS server (behind the engine's 127.0.0.11)."""
    return {"Dns": [relay_ip]}


def relay_companion(resolver: str, spec: SandboxSpec, relay_ip: str, sandbox_ip: str) -> list[str]:
    """The enforcer's command line, started by the relay as its companion."""
    assert spec.egress is not None
    config = {
        "listen": relay_ip,
        "proxy_port": PROXY_PORT,
        "dns_port": DNS_PORT,
        "clients": [sandbox_ip],
        "resolver": resolver,
        "allow": list(spec.egress),
    }
    # -E -s rather than -I: the script imports its two sibling modules from its own directory.
    return [EGRESS_PYTHON, "-E", "-s", EGRESS_SCRIPT, json.dumps(config, separators=(",", ":"))]


def relay_host_config() -> dict[str, Any]:
    """Lets the unprivileged relay bind port 53 (a per-container network sysctl: no capability)."""
    return {
        "Sysctls": {"net.ipv4.ip_unprivileged_port_start": str(DNS_PORT)},
        "Memory": RELAY_MEMORY,
        "MemorySwap": RELAY_MEMORY,
    }
