"""A sandbox cannot open connections to another sandbox, the host or the internet;
``internet=True`` opts into a route out. Every probe here is a TCP connect from
inside a sandbox that must fail (so nothing leaves the machine), except the
controls, which target the sandbox itself and a server of this test on the host. The
sandbox's relay, the one container on both its network and the host's side, routes
nothing between them. A failure prints every probe (what it saw), the sandbox's
routes and neighbours and the relay's forwarding switches, untruncated."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from dockertools import Agent, adocker, inspect
from gw_helpers import make_spec

from gateway.agent_transport import AgentTransport
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle
from gateway.runtimes.docker import DockerRuntime

pytestmark = pytest.mark.docker

PROBE = """
import errno, json, socket, sys, time
probes = []
for host, port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.settimeout(4)
    began = time.monotonic()
    try:
        sock.connect((host, port))
        seen = f"connected from {sock.getsockname()} to {sock.getpeername()}"
        probes.append(["CONNECTED", host, port, seen])
    except OSError as error:
        seen = errno.errorcode.get(error.errno or 0, type(error).__name__)
        probes.append(["FAILED", host, port, f"{seen} after {time.monotonic() - began:.1f} s"])
    finally:
        sock.close()
# What the sandbox's packets could use: its routes and the neighbours it resolved meanwhile.
def table(name):
    return [" ".join(line.split()) for line in open(f"/proc/net/{name}").readlines()[1:]]
print(json.dumps({"probes": probes, "route": table("route"), "arp": table("arp")}))
"""


class HostServer:
    """A TCP server on every address of the host; counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


@pytest.fixture
async def host_server() -> AsyncIterator[HostServer]:
    server_state = HostServer()
    server = await asyncio.start_server(server_state._accept, host="0.0.0.0", port=0)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        await server.wait_closed()


def host_primary_ip() -> str:
    # A UDP "connect" only picks the outgoing address; nothing is sent.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.1", 9))
        return str(sock.getsockname()[0])


async def probe(
    client: httpx.AsyncClient, handle: SandboxHandle, targets: list[tuple[str, int]]
) -> dict[str, Any]:
    """Runs :data:`PROBE` in the sandbox: ``{"probes": [[verdict, host, port, what it saw], ...]
    (in the order of targets), "route": ..., "arp": ...}`` (its ``/proc/net`` tables after)."""
    agent = Agent(client, handle.base_url, handle.token)
    task, output = await agent.shell(["python3", "-c", PROBE, json.dumps(targets)])
    assert task["status"] == "COMPLETED", (task, output)
    report: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    assert [[host, port] for _, host, port, _ in report["probes"]] == [[h, p] for h, p in targets], output
    return report


async def relay_forwarding(relay: str) -> str:
    """The relay's IPv4 forwarding switches, one ``path:value`` a line (as the engine's exec reads them)."""
    return await adocker("exec", relay, "grep", "-r", ".", "/proc/sys/net/ipv4/conf", "--include=forwarding")


async def test_a_sandbox_reaches_no_other_sandbox_nor_the_host_nor_the_internet(
    relayed_runtime: DockerRuntime, host_server: HostServer
) -> None:
    docker_runtime = relayed_runtime  # the relay design (no network at all: test_docker_networkless.py)
    mine, other = make_spec(title="prober"), make_spec(title="target")
    handle, _ = await asyncio.gather(docker_runtime.start(mine), docker_runtime.start(other))
    install = docker_runtime._install
    other_names, my_names = (
        cfg.Names.of(install, other.conversation_id),
        cfg.Names.of(install, mine.conversation_id),
    )
    other_sandbox = await inspect("container", other_names.sandbox)
    other_relay = await inspect("container", other_names.relay)
    my_network = await inspect("network", my_names.network)
    port = host_server.port
    targets = {
        "own agent (control)": ("127.0.0.1", cfg.AGENT_PORT),
        "other sandbox's agent": (
            other_sandbox["NetworkSettings"]["Networks"][other_names.network]["IPAddress"],
            cfg.AGENT_PORT,
        ),
        "other sandbox's relay": (
            other_relay["NetworkSettings"]["Networks"]["bridge"]["IPAddress"],
            cfg.AGENT_PORT,
        ),
        "host on docker0": (other_relay["NetworkSettings"]["Networks"]["bridge"]["Gateway"], port),
        "host on this network's gateway address": (my_network["IPAM"]["Config"][0]["Gateway"], port),
        "host's own address": (host_primary_ip(), port),
        "the internet": ("1.1.1.1", 443),
    }
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        report = await probe(client, handle, list(targets.values()))
    seen = {what: result for what, result in zip(targets, report["probes"], strict=True)}
    reached = [what for what, (verdict, *_) in seen.items() if verdict != "FAILED"]
    forwarding = (await relay_forwarding(my_names.relay)).split()
    routing_relay = [line for line in forwarding if not line.endswith(":0")]
    if reached != ["own agent (control)"] or host_server.accepted or routing_relay or not forwarding:
        # The whole story, untruncated (pytest shortens an assertion's explanation).
        story = {
            "should be only the control": reached,
            "probes": seen,
            "host server accepted": host_server.accepted,
            "sandbox routes": report["route"],
            "sandbox neighbours": report["arp"],
            "sandbox network": my_network["IPAM"]["Config"],
            "relay forwarding (all must be 0)": forwarding,
        }
        pytest.fail(json.dumps(story, indent=1), pytrace=False)


async def test_internet_opt_in_gives_the_sandbox_a_route_out(
    docker_runtime: DockerRuntime, host_server: HostServer
) -> None:
    spec = make_spec(title="online", internet=True)
    handle = await docker_runtime.start(spec)
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    network = await inspect("network", names.network)
    assert network["Internal"] is False
    assert (await inspect("container", names.sandbox))["Config"]["Labels"][cfg.INTERNET] == "true"
    gateway_ip = network["IPAM"]["Config"][0]["Gateway"]
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        report = await probe(client, handle, [(gateway_ip, host_server.port)])
    # Our own server on the host stands in for "out there": the route exists.
    assert [verdict for verdict, *_ in report["probes"]] == ["CONNECTED"], report
    assert host_server.accepted == 1
