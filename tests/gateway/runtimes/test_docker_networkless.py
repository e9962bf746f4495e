"""A sandbox with neither internet nor an egress list runs with no network at all and no relay:
only loopback inside, its agent on a Unix socket in a host directory of its own. It reaches
nothing (probes from inside), no other sandbox reaches its socket, a gateway killed with -9 and
started again adopts it, and nothing of it is left once removed, its directory included."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
from pathlib import Path

import httpx
import pytest
from dockertools import Agent, adocker, alabelled, inspect, remove_labelled
from gw_helpers import make_spec
from test_docker_isolation import HostServer, host_primary_ip, host_server  # noqa: F401 (a fixture)

from gateway.agent_transport import AgentTransport, socket_of
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import SandboxHandle, SandboxState
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings

pytestmark = pytest.mark.docker

#: From inside: the interfaces, what is in the socket directory and whether it can be changed,
#: then a connect to each target: ``[host, port]`` over TCP, ``[path, 0]`` to a Unix socket.
PROBE = r"""
import json, os, socket, sys
facts = {"interfaces": sorted(os.listdir("/sys/class/net")), "socket_dir": sorted(os.listdir(sys.argv[1]))}
for what, act in (
    ("create", lambda: open(os.path.join(sys.argv[1], "planted"), "w").close()),
    ("unlink", lambda: os.unlink(os.path.join(sys.argv[1], "agent.sock"))),
    ("symlink", lambda: os.symlink("/etc/passwd", os.path.join(sys.argv[1], "link"))),
):
    try:
        act()
        facts[what] = "done"
    except OSError as error:
        facts[what] = type(error).__name__
reach = {}
for host, port in json.loads(sys.argv[2]):
    unix = host.startswith("/")
    sock = socket.socket(socket.AF_UNIX if unix else socket.AF_INET)
    sock.settimeout(4)
    try:
        sock.connect(host if unix else (host, port))
        reach[f"{host}:{port}"] = "CONNECTED"
    except OSError as error:
        reach[f"{host}:{port}"] = type(error).__name__
    finally:
        sock.close()
facts["reach"] = reach
print("FACTS " + json.dumps(facts), flush=True)
"""


async def facts_of(handle: SandboxHandle, targets: list[tuple[str, int]]) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        task, output = await Agent(client, handle.base_url, handle.token).shell(
            ["python3", "-c", PROBE, cfg.SOCKET_DIR, json.dumps(targets)]
        )
    assert task["status"] == "COMPLETED", (task, output)
    line = next(line for line in output.splitlines() if line.startswith("FACTS "))
    return dict(json.loads(line.removeprefix("FACTS ")))


async def test_it_has_no_network_no_relay_and_a_socket_directory_of_its_own(
    docker_runtime: DockerRuntime,
) -> None:
    spec = make_spec(title="networkless")
    handle = await docker_runtime.start(spec)
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    sandbox = await inspect("container", names.sandbox)
    assert sandbox["HostConfig"]["NetworkMode"] == "none"
    assert set(sandbox["NetworkSettings"]["Networks"]) == {"none"}
    assert sandbox["Config"]["Labels"][cfg.NETWORK] == "none"
    left = await alabelled(f"convoy.conversation-id={spec.conversation_id}")
    assert left["containers"] == [sandbox["Id"][:12]] and left["networks"] == []  # no relay, no network
    socket = socket_of(handle.base_url)
    assert socket is not None
    directory = Path(socket).parent
    binds = [(m["Type"], m["Source"], m["Destination"]) for m in sandbox["Mounts"] if m["Type"] == "bind"]
    assert binds == [("bind", str(directory), cfg.SOCKET_DIR)]
    # The gateway user's alone above it; sealed (no one else may write) once the agent answered.
    assert directory.parent.stat().st_mode & 0o777 == 0o700
    assert directory.stat().st_mode & 0o777 == 0o755
    assert os.listdir(directory) == ["agent.sock"]


async def test_it_reaches_neither_host_nor_internet_nor_its_neighbour_nor_can_change_its_directory(
    docker_runtime: DockerRuntime,
    host_server: HostServer,  # noqa: F811
) -> None:
    mine, other = make_spec(title="prober"), make_spec(title="neighbour")
    handle, neighbour = await asyncio.gather(docker_runtime.start(mine), docker_runtime.start(other))
    bridge = json.loads(await adocker("network", "inspect", "bridge"))[0]
    config = bridge["IPAM"]["Config"][0]  # the engine may leave the gateway address out
    docker0 = config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"]).network_address + 1)
    neighbour_socket = socket_of(neighbour.base_url)
    assert neighbour_socket is not None
    port = host_server.port
    targets = {
        "own agent's socket (control)": (cfg.AGENT_SOCKET, 0),
        "the neighbour's socket, at the host's path": (neighbour_socket, 0),
        "host on docker0": (docker0, port),
        "host's own address": (host_primary_ip(), port),
        "the gateway's own address": ("127.0.0.1", port),  # loopback is the sandbox's own
        "the internet": ("1.1.1.1", 443),
    }
    facts = await facts_of(handle, list(targets.values()))
    assert facts["interfaces"] == ["lo"]
    assert facts["socket_dir"] == ["agent.sock"]
    assert {facts["create"], facts["unlink"], facts["symlink"]} == {"PermissionError"}
    reach = facts["reach"]
    assert isinstance(reach, dict)
    verdicts = {what: reach[f"{host}:{port}"] for what, (host, port) in targets.items()}
    assert verdicts.pop("own agent's socket (control)") == "CONNECTED"
    assert "CONNECTED" not in verdicts.values(), verdicts
    assert host_server.accepted == 0
    # The neighbour's container has its own directory mounted, never this one's.
    other_names = cfg.Names.of(docker_runtime._install, other.conversation_id)
    mounted = [m["Source"] for m in (await inspect("container", other_names.sandbox))["Mounts"]]
    assert str(Path(socket_of(handle.base_url) or "").parent) not in mounted
    assert str(Path(neighbour_socket).parent) in mounted


async def test_a_restarted_gateway_adopts_it_and_its_agent_answers(
    docker_runtime: DockerRuntime, docker_settings: Settings
) -> None:
    spec = make_spec(title="survivor")
    handle = await docker_runtime.start(spec)
    fresh = await DockerRuntime.connect(docker_settings)
    try:
        found = await fresh.find(spec.conversation_id)
        assert found == handle and found.state is SandboxState.RUNNING
        assert await fresh.cleanup_orphans() == 0  # whole with its container alone: no orphan
        async with httpx.AsyncClient(timeout=30, transport=AgentTransport()) as client:
            info = await Agent(client, found.base_url, spec.token).get("/agent-info")
        assert info.json()["conversation_id"] == str(spec.conversation_id)
    finally:
        await fresh.close()


async def test_nothing_is_left_once_removed_nor_of_a_directory_no_sandbox_owns(
    docker_runtime: DockerRuntime,
) -> None:
    spec = make_spec(title="doomed")
    handle = await docker_runtime.start(spec)
    socket = socket_of(handle.base_url)
    assert socket is not None
    assert await docker_runtime.remove(spec.conversation_id) is True
    await docker_runtime.removals_done()
    assert not await asyncio.to_thread(Path(socket).parent.exists)
    left = await alabelled(f"convoy.conversation-id={spec.conversation_id}")
    assert not any(left.values()), left

    # A directory left by a gateway killed between making it and its sandbox: an orphan.
    stray = make_spec(title="stray")
    names = cfg.Names.of(docker_runtime._install, stray.conversation_id)
    made = Path(await docker_runtime._sockets.make(names))
    docker_runtime.orphan_age = 0.0
    assert await docker_runtime.cleanup_orphans() >= 1
    assert not await asyncio.to_thread(made.exists)


async def test_a_sandbox_whose_container_is_removed_behind_its_back_is_absent(
    docker_runtime: DockerRuntime,
) -> None:
    spec = make_spec(title="vanishing")
    await docker_runtime.start(spec)
    await asyncio.to_thread(remove_labelled, f"convoy.conversation-id={spec.conversation_id}")
    assert await docker_runtime.find(spec.conversation_id) is None
    docker_runtime.orphan_age = 0.0
    await docker_runtime.cleanup_orphans()
    directory = docker_runtime._sockets.directory(cfg.Names.of(docker_runtime._install, spec.conversation_id))
    assert not await asyncio.to_thread(directory.exists)


async def test_its_usage_counts_no_network_for_what_went_over_its_socket(
    docker_runtime: DockerRuntime,
) -> None:
    """Usage's network is the sandbox's interfaces: it has none but loopback, so 0 (a fact,
    not unknown), however much the gateway exchanged with its agent over the socket; the
    download itself (sendfile over the socket) comes byte-exact."""
    spec = make_spec(title="usage")
    handle = await docker_runtime.start(spec)
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        agent = Agent(client, handle.base_url, handle.token)
        task, output = await agent.shell(
            ["sh", "-c", "head -c 6000000 /dev/urandom > big.bin && sha256sum big.bin"]
        )
        assert task["status"] == "COMPLETED", (task, output)
        download = await agent.get("/file-content/big.bin")
    assert len(download.content) == 6_000_000
    assert hashlib.sha256(download.content).hexdigest() == output.split()[0]
    used = await docker_runtime.usage(spec.conversation_id)
    assert used is not None and (used.network_rx_bytes, used.network_tx_bytes) == (0, 0)
