"""The egress enforcer's rules, as pure functions (no I/O but reading the route table).

Part of ``egress.py`` (see there): what an allow-list allows, which networks
the relay container is on, and the server name a TLS ClientHello asks for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
TLS_HANDSHAKE = 0x16


class Policy:
    """The allow-list: exact names, name suffixes (``*.name``) and networks."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[Network] = []
        for entry in entries:
            if "/" in entry:
                self.networks.append(ipaddress.ip_network(entry))
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])  # ".pythonhosted.org"
            else:
                self.names.add(entry)

    def allows_name(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def allows_address(self, address: Address) -> bool:
        return any(address in network for network in self.networks)


def address_of(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def special(address: Address) -> bool:
    return address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified


def connected_networks(route_table: str = "/proc/net/route") -> list[Network]:
    """The networks this container is on (its directly connected IPv4 routes): the
    conversation's and the gateway's side, where other relays and the host's bridge
    address live. A name resolving into them is refused unless an entry allows it."""
    networks: list[Network] = []
    try:
        with open(route_table) as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return networks
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[2] != "00000000" or fields[1] == "00000000":
            continue
        destination, mask = (ipaddress.IPv4Address(bytes.fromhex(f)[::-1]) for f in (fields[1], fields[7]))
        networks.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return networks


def server_name(data: bytes) -> str | None:
    """The SNI host name of a TLS ClientHello in ``data``; ``None`` when ``data`` is not
    TLS or names no server; ``ValueError`` when it is TLS but not a whole, readable ClientHello."""
    if not data or data[0] != TLS_HANDSHAKE:
        return None
    try:
        body = data[5 : 5 + int.from_bytes(data[3:5], "big")]
        if body[0] != 1 or len(body) < 4 + int.from_bytes(body[1:4], "big"):
            raise ValueError("the ClientHello is not in one TLS record")
        at = 4 + 2 + 32  # handshake header, client version, random
        at += 1 + body[at]  # session id
        at += 2 + int.from_bytes(body[at : at + 2], "big")  # cipher suites
        at += 1 + body[at]  # compression methods
        end = min(len(body), at + 2 + int.from_bytes(body[at : at + 2], "big"))
        at += 2
        while at + 4 <= end:
            kind, size = (
                int.from_bytes(body[at : at + 2], "big"),
                int.from_bytes(body[at + 2 : at + 4], "big"),
            )
            if kind == 0:  # server_name: list length, name type 0 (host_name), name length, name
                length = int.from_bytes(body[at + 7 : at + 9], "big")
                return body[at + 9 : at + 9 + length].decode("ascii").lower()
            at += 4 + size
        return None
    except (IndexError, UnicodeDecodeError):
        raise ValueError("the ClientHello cannot be read") from None
