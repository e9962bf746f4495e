"""A sandbox cannot open connections to another sandbox, the host or the internet;
``internet=True`` opts into a route out. Every probe here is a TCP connect from
inside a sandbox that must fail (so nothing leaves the machine), except the
controls, which target the sandbox itself and a server of this test on the host."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from dockertools import Agent, inspect
from gw_helpers import make_spec

from gateway.agent_transport import AgentTransport
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle
from gateway.runtimes.docker import DockerRuntime

pytestmark = pytest.mark.docker

PROBE = """
import json, socket, sys
for host, port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.settimeout(4)
    try:
        sock.connect((host, port))
        print("CONNECTED", host, port)
    except OSError as error:
        print("FAILED", host, port, type(error).__name__)
    finally:
        sock.close()
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
) -> dict[str, str]:
    agent = Agent(client, handle.base_url, handle.token)
    task, output = await agent.shell(["python3", "-c", PROBE, json.dumps(targets)])
    assert task["status"] == "COMPLETED", task
    results = {}
    for line in output.splitlines():
        verdict, host, port, *_ = line.split()
        results[f"{host}:{port}"] = verdict
    assert len(results) == len(targets), output
    return results


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
        results = await probe(client, handle, list(targets.values()))
    verdicts = {what: results[f"{host}:{port}"] for what, (host, port) in targets.items()}
    assert verdicts.pop("own agent (control)") == "CONNECTED"
    assert set(verdicts.values()) == {"FAILED"}, verdicts
    assert host_server.accepted == 0


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
        results = await probe(client, handle, [(gateway_ip, host_server.port)])
    # Our own server on the host stands in for "out there": the route exists.
    assert results == {f"{gateway_ip}:{host_server.port}": "CONNECTED"}
    assert host_server.accepted == 1
