"""The network of one Docker conversation: a /29 of its own (the sandbox and its relay) cut
from the installation's pool, and the bridge's engine configuration. Pure functions."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SUBNET_PREFIX", "Subnet", "free_subnets", "network_config"]

SUBNET_PREFIX = 29  # gateway address (unused), the sandbox, the relay


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
