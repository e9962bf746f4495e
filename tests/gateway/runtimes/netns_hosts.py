"""Test hosts in a network namespace of the test's own: the only "outside" the egress tests reach.

:func:`namespace_hosts` makes a namespace ``convoy-test-*`` joined to the host by a
veth pair with private addresses (``10.231.N.0/24``: the host end ``.1``, the
namespace ``.2``, ``.3`` and ``.4``), accepts forwarding between Docker's default
bridge and that veth (``DOCKER-USER``), and runs in the namespace an HTTP server
on every address and a DNS server on ``.2`` that answer the names of
:data:`ZONE`. Both servers log what reached them (``HTTP <local address>``,
``DNS <name>``), so a test can prove that something never left. Everything is
undone in reverse order on exit, also when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

HTTP_PORT = 8081
SERVERS = """
import http.server, socketserver, sys, threading
import dns.message, dns.rcode, dns.rrset
log_path, dns_ip, zone = sys.argv[1], sys.argv[2], dict(pair.split("=") for pair in sys.argv[3].split(","))
lock = threading.Lock()
def log(line):
    with lock, open(log_path, "a") as out:
        out.write(line + "\\n")
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        local = self.connection.getsockname()[0]
        log(f"HTTP {local}")
        body = f"hello from {local} for {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Dns(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        query = dns.message.from_wire(data)
        name = query.question[0].name.to_text(omit_final_dot=True)
        log(f"DNS {name}")
        reply = dns.message.make_response(query)
        if name in zone and query.question[0].rdtype == 1:
            reply.answer.append(dns.rrset.from_text(name + ".", 5, "IN", "A", zone[name]))
        elif name not in zone:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(reply.to_wire(), self.client_address)
http_server = http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Hello)
dns_server = socketserver.ThreadingUDPServer((dns_ip, 53), Dns)
threading.Thread(target=dns_server.serve_forever, daemon=True).start()
log("READY")
http_server.serve_forever()
""".replace("PORT", str(HTTP_PORT))


@dataclass
class Hosts:
    """The namespace's addresses, and what its servers logged."""

    name: str
    prefix: str  # "10.231.N"
    log_path: Path

    def ip(self, last: int) -> str:
        return f"{self.prefix}.{last}"

    @property
    def resolver(self) -> str:
        return f"{self.ip(2)}:53"

    def log(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def _free_tag() -> str:
    """Two hex digits no namespace of ours uses (interface names have at most 15 characters)."""
    taken = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return random.choice([f"{n:02x}" for n in range(256) if f"convoy-test-{n:02x}" not in taken])


def _free_prefix() -> str:
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for third in random.sample(range(256), 256):
        prefix = f"10.231.{third}"
        network = ipaddress.IPv4Network(f"{prefix}.0/24")
        if not any(
            ipaddress.IPv4Interface(word).network.overlaps(network)
            for line in used.splitlines()
            for word in line.split()
            if "/" in word and word[0].isdigit()
        ):
            return prefix
    raise AssertionError("no free 10.231.N.0/24 on this host")


@contextlib.asynccontextmanager
async def namespace_hosts(tmp_path: Path, zone: dict[str, int | str]) -> AsyncIterator[Hosts]:
    """The namespace and its servers; ``zone`` maps names to the last byte of their address
    in the namespace (an int) or to any address (a str)."""
    tag = await asyncio.to_thread(_free_tag)
    name, outer, inner = f"convoy-test-{tag}", f"convoy-test-{tag}h", f"convoy-test-{tag}n"
    prefix = await asyncio.to_thread(_free_prefix)
    hosts = Hosts(name=name, prefix=prefix, log_path=tmp_path / f"{name}.log")
    undo: list[Callable[[], None]] = []
    servers: asyncio.subprocess.Process | None = None
    script = tmp_path / f"{name}-servers.py"
    script.write_text(SERVERS)

    def step(command: list[str], reverse: list[str] | None) -> None:
        _run(*command)
        if reverse is not None:
            undo.append(lambda: subprocess.run(reverse, capture_output=True, timeout=30, check=False))

    try:
        await asyncio.to_thread(step, ["ip", "netns", "add", name], ["ip", "netns", "delete", name])
        await asyncio.to_thread(
            step,
            ["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
            ["ip", "link", "del", outer],
        )
        await asyncio.to_thread(step, ["ip", "link", "set", inner, "netns", name], None)
        await asyncio.to_thread(step, ["ip", "addr", "add", f"{prefix}.1/24", "dev", outer], None)
        await asyncio.to_thread(step, ["ip", "link", "set", outer, "up"], None)
        netns = ["ip", "netns", "exec", name]
        for last in (2, 3, 4):
            await asyncio.to_thread(
                step, [*netns, "ip", "addr", "add", f"{prefix}.{last}/24", "dev", inner], None
            )
        await asyncio.to_thread(step, [*netns, "ip", "link", "set", inner, "up"], None)
        await asyncio.to_thread(step, [*netns, "ip", "link", "set", "lo", "up"], None)
        for rule in (
            ["-i", "docker0", "-o", outer, "-j", "ACCEPT"],
            [
                "-i",
                outer,
                "-o",
                "docker0",
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ],
        ):
            await asyncio.to_thread(
                step, ["iptables", "-I", "DOCKER-USER", *rule], ["iptables", "-D", "DOCKER-USER", *rule]
            )
        zone_arg = ",".join(
            f"{host}={address if isinstance(address, str) else f'{prefix}.{address}'}"
            for host, address in zone.items()
        )
        servers = await asyncio.create_subprocess_exec(
            *netns, sys.executable, str(script), str(hosts.log_path), f"{prefix}.2", zone_arg
        )
        for _ in range(300):
            if "READY" in hosts.log():
                break
            assert servers.returncode is None, "the namespace's servers exited"
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the namespace's servers did not start")
        yield hosts
    finally:
        if servers is not None and servers.returncode is None:
            servers.kill()
            await servers.wait()
        for action in reversed(undo):
            await asyncio.to_thread(action)
