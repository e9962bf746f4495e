"""What a sandbox with an egress allow-list can reach: a probe run as a task inside it, and a
stand-in for the relay's neighbours on the host. Used by ``test_egress.py``."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from dockertools import Agent, docker

PROBE = r"""
import json, os, socket, ssl, struct, sys, urllib.error, urllib.request
checks, out = json.loads(sys.argv[1]), {}
proxy_host, proxy_port = os.environ["HTTPS_PROXY"].rsplit("/", 1)[-1].split(":")

def http(url):
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return [response.status, response.read().decode()]
    except urllib.error.HTTPError as error:
        return [error.code, error.read().decode()]
    except Exception as error:
        return ["error", repr(error)]

def read_all(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data.decode(errors="replace")

def connect(target):
    with socket.create_connection((proxy_host, int(proxy_port)), timeout=15) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            if not chunk:
                return ["closed", head.decode()]
            head += chunk
        status = int(head.split()[1])
        if status != 200:
            return [status, read_all(sock)]
        sock.sendall(b"GET / HTTP/1.0\r\nHost: tunnelled\r\n\r\n")
        return [status, read_all(sock)]

def tls(arg):
    target, server_name = arg.split("|")
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    try:
        context.wrap_bio(incoming, outgoing, server_hostname=server_name).do_handshake()
    except ssl.SSLWantReadError:
        pass
    with socket.create_connection((proxy_host, int(proxy_port)), timeout=15) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        sock.sendall(outgoing.read())
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = read_all(sock)
        except OSError as error:
            answer = ""
        return [int(head.split()[1]), "ANSWERED" if answer else "CLOSED"]

def resolve(name):
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except OSError as error:
        return ["error", type(error).__name__]

def direct(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=4).close()
        return "CONNECTED"
    except OSError:
        return "FAILED"

def dns_direct(server):
    query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in "allowed.egress.test".split(".")) + b"\0\0\1\0\1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        try:
            sock.sendto(query, (server, 53))
            sock.recvfrom(512)
            return "ANSWERED"
        except OSError:
            return "NOTHING"

for key, (kind, arg) in checks.items():
    out[key] = globals()[kind](arg)
print(json.dumps(out))
"""


async def probe(agent: Agent, checks: dict[str, tuple[str, str]]) -> dict[str, Any]:
    task, output = await agent.shell(["python3", "-c", PROBE, json.dumps(checks)])
    assert task["status"] == "COMPLETED", (task, output)
    results: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return results


def docker0_address() -> str:
    """The host's address on Docker's default bridge (the relay's outer network in these tests)."""
    subnet = json.loads(docker("network", "inspect", "bridge"))[0]["IPAM"]["Config"][0]
    return str(subnet.get("Gateway") or next(ipaddress.IPv4Network(subnet["Subnet"]).hosts()))


class Neighbour:
    """A TCP server of the host on its docker0 address, which the relay could reach; counts connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nneighbour")
        await writer.drain()
        writer.close()


@asynccontextmanager
async def host_neighbour() -> AsyncIterator[Neighbour]:
    state = Neighbour()
    server = await asyncio.start_server(state.accept, docker0_address(), 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()
