"""Bind addresses: whether the address a server is told to listen on is loopback only. No
dependency beyond the standard library, so the gateway's server and the CLI (which may be
installed without the server's packages) share it."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` (``localhost``, an IPv4 or IPv6 address, brackets allowed)
    listens on loopback only; a name other than ``localhost`` is not (it may resolve anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
