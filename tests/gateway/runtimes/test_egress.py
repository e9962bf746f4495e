"""Egress by allow-list: ``"egress": {"allow": [...]}`` on POST /conversation.

Without Docker: entries are validated (a 422 naming each bad one), contradict
``internet``, are refused by the process runtime (which cannot enforce them),
travel in the sandbox's labels and configure the sandbox and its relay.

With Docker (marked): a real sandbox whose only "outside" is a network namespace
of this test (:mod:`netns_hosts`, private addresses): through the relay's proxy
it reaches the allowed names and networks and nothing else, its DNS resolves
allowed names only (denied ones never reach the upstream resolver), a direct
connection has no route, and the allow-list survives a gateway restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from dockertools import Agent, create, docker_runtime_of, inspect
from egress_probe import Neighbour, docker0_address, host_neighbour, probe
from gw_helpers import Harness, make_spec
from netns_hosts import HTTP_PORT, Hosts, namespace_hosts

from gateway.app import create_app
from gateway.client import AsyncConvoyClient, BadRequest
from gateway.egress import normalize_entries
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import docker_egress
from gateway.runtimes.docker import DockerRuntime
from gateway.runtimes.docker_sandboxes import container_policy
from gateway.settings import Settings
from sandbox_agent.protocol import AGENT_TOKEN_ENV
from tests.helpers import free_port

ENFORCER = Path(__file__).resolve().parents[3] / "images" / "sandbox" / "egress_rules.py"

# --- the allow-list as data ----------------------------------------------------------


def test_entries_are_normalised() -> None:
    assert normalize_entries(
        ["PyPI.org.", "*.PythonHosted.org", "10.1.2.7/24", "10.9.9.9", "bücher.example", "pypi.org"]
    ) == ["pypi.org", "*.pythonhosted.org", "10.1.2.0/24", "10.9.9.9/32", "xn--bcher-kva.example"]


@pytest.mark.parametrize(
    "entry",
    ["", "*", "*.org", "localhost", "http://pypi.org", "pypi.org:443", "10.1.2.0/33", "a..b", "-a.org"],
)
def test_a_bad_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="allow\\[0\\]"):
        normalize_entries([entry])


async def test_bad_entries_are_a_422_that_names_them(harness: Harness) -> None:
    async with harness.client() as client:
        body = {"egress": {"allow": ["pypi.org", "not a host", "10.0.0.0/99"]}}
        response = await client.post("/conversation", json=body)
        assert response.status_code == 422, response.text
        message = " ".join(str(error["msg"]) for error in response.json()["detail"])
        assert "allow[1]: 'not a host'" in message and "allow[2]: '10.0.0.0/99'" in message
        assert "allow[0]" not in message
        assert (await client.get("/conversation-count")).json()["count"] == 0


async def test_egress_with_internet_is_a_422(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.post(
            "/conversation", json={"internet": True, "egress": {"allow": ["pypi.org"]}}
        )
        assert response.status_code == 422, response.text
        assert "internet" in json.dumps(response.json()["detail"])


async def test_the_client_asks_for_an_allow_list(harness: Harness) -> None:
    async with harness.serve() as base, AsyncConvoyClient(base) as client:
        with pytest.raises(BadRequest, match="cannot enforce an egress allow-list"):
            await client.create(egress=["pypi.org"])


async def test_the_process_runtime_refuses_an_allow_list(harness: Harness) -> None:
    async with harness.client() as client:
        response = await client.post("/conversation", json={"egress": {"allow": ["pypi.org"]}})
        assert response.status_code == 422, response.text
        assert "cannot enforce" in response.json()["detail"]
        assert (await client.get("/conversation-count")).json()["count"] == 0


def test_the_allow_list_is_in_the_labels_and_configures_both_containers() -> None:
    policy = container_policy(Settings(egress_resolver="10.231.0.2:53"))
    spec = make_spec(egress=("pypi.org", "*.pythonhosted.org", "10.1.2.0/24"))
    labels = cfg.sandbox_labels(spec, "inst", "1")
    info: dict[str, Any] = {"Config": {"Labels": labels, "Env": []}}
    assert cfg.spec_from_container(info, spec.token) == spec
    # A sandbox of an older gateway kept its token in the environment.
    old = {"Config": {"Labels": labels, "Env": [f"{AGENT_TOKEN_ENV}={spec.token}"]}}
    assert cfg.spec_from_container(old, None) == spec
    subnet = next(cfg.free_subnets("10.213.0.0/28", []))
    names = cfg.Names.of("inst", spec.conversation_id)
    sandbox = cfg.sandbox_config(policy, spec, labels, names, subnet)
    assert f"HTTPS_PROXY=http://{subnet.relay_ip}:{docker_egress.PROXY_PORT}" in sandbox["Env"]
    assert sandbox["HostConfig"]["Dns"] == [subnet.relay_ip]
    relay = cfg.relay_config(policy, labels, subnet, "bridge", True, spec=spec)
    companion = relay["Cmd"][relay["Cmd"].index("--") + 1 :]
    assert companion[:4] == [docker_egress.EGRESS_PYTHON, "-E", "-s", docker_egress.EGRESS_SCRIPT]
    config = json.loads(companion[4])
    assert config["allow"] == list(spec.egress or ())
    assert config["listen"] == subnet.relay_ip and config["clients"] == [subnet.sandbox_ip]
    assert config["resolver"] == "10.231.0.2:53"

    plain = make_spec()
    assert cfg.EGRESS not in cfg.sandbox_labels(plain, "inst", "1")
    assert (
        cfg.spec_from_container(
            {"Config": {"Labels": cfg.sandbox_labels(plain, "inst", "1"), "Env": []}}, plain.token
        )
        == plain
    )
    assert "--" not in cfg.relay_config(policy, labels, subnet, "bridge", True, spec=plain)["Cmd"]
    assert "Dns" not in cfg.sandbox_config(policy, plain, labels, names, subnet)["HostConfig"]


def load_enforcer() -> Any:
    loaded = importlib.util.spec_from_file_location("convoy_egress_rules", ENFORCER)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def test_the_enforcer_knows_the_networks_it_is_on(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
        "eth1\t2838D50A\t00000000\t0001\t0\t0\t0\tF8FFFFFF\t0\t0\t0\n"
    )
    networks = [str(network) for network in load_enforcer().connected_networks(str(table))]
    assert networks == ["172.17.0.0/16", "10.213.56.40/29"]


def test_the_enforcer_matches_names_and_networks() -> None:
    module = load_enforcer()
    policy = module.Policy(["pypi.org", "*.pythonhosted.org", "10.1.2.0/24"])
    assert policy.allows_name("pypi.org") and policy.allows_name("PyPI.org.")
    assert policy.allows_name("files.pythonhosted.org") and policy.allows_name("a.b.pythonhosted.org")
    assert not policy.allows_name("pythonhosted.org")  # a wildcard covers the names below it only
    assert not policy.allows_name("evilpypi.org") and not policy.allows_name("pypi.org.evil.com")
    assert not policy.allows_name("xpythonhosted.org")
    ip = module.ipaddress.ip_address
    assert policy.allows_address(ip("10.1.2.200")) and not policy.allows_address(ip("10.1.3.1"))


def client_hello(server_name: str | None) -> bytes:
    """The first TLS record a Python client sends to ``server_name``."""
    context = ssl.create_default_context()
    context.check_hostname = server_name is not None
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_enforcer_reads_the_server_name_of_a_client_hello() -> None:
    module = load_enforcer()
    assert module.server_name(client_hello("files.pythonhosted.org")) == "files.pythonhosted.org"
    assert module.server_name(client_hello(None)) is None
    assert module.server_name(b"SSH-2.0-OpenSSH_9.2\r\n") is None
    with pytest.raises(ValueError):
        module.server_name(client_hello("pypi.org")[:60])


RELAY = ENFORCER.with_name("relay.py")


async def run_relay(port: int, companion_code: str) -> tuple[asyncio.subprocess.Process, list[bool]]:
    """The relay with a Python companion; also whether a connection to it was ever accepted
    while it ran (polled until it exits)."""
    relay = await asyncio.create_subprocess_exec(
        *(sys.executable, "-I", "-S", str(RELAY), str(port), "127.0.0.1", "9"),
        *("--", sys.executable, "-c", companion_code),
        stderr=asyncio.subprocess.PIPE,
    )
    accepted: list[bool] = []
    try:
        async with asyncio.timeout(60):
            while relay.returncode is None:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    accepted.append(True)
                except OSError:
                    pass
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(relay.wait(), 0.05)
    finally:
        if relay.returncode is None:
            relay.kill()
            await relay.wait()
    return relay, accepted


async def test_the_relay_serves_once_its_companion_serves_and_ends_with_it() -> None:
    """A relay whose enforcer died must not go on as if egress were still enforced."""
    # Serving for a while: a loaded machine may take its time to poll the relay's port.
    code = "import time; time.sleep(0.3); print('serving', flush=True); time.sleep(5)"
    relay, accepted = await run_relay(free_port(), code)
    assert relay.returncode == 1 and accepted
    assert relay.stderr is not None and b"companion process ended" in await relay.stderr.read()


async def test_the_relay_never_serves_before_its_companion_does() -> None:
    relay, accepted = await run_relay(free_port(), "import time; time.sleep(1.5)")
    assert relay.returncode == 1 and not accepted
    assert relay.stderr is not None and b"did not get ready" in await relay.stderr.read()


# --- a real sandbox, a namespace of ours as the outside ----------------------------

ZONE: dict[str, int | str] = {
    "allowed.egress.test": 2,
    "files.wild.egress.test": 2,
    "wild.egress.test": 2,
    "denied.egress.test": 3,
}


@pytest.fixture
async def hosts(tmp_path: Path) -> Any:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        pytest.skip("network namespaces of test hosts need root, ip and iptables")
    # An allowed name that points at the host's address on the relay's outer network:
    # a name may not lead to the relay's neighbours.
    zone = ZONE | {"bridge.wild.egress.test": docker0_address()}
    async with namespace_hosts(tmp_path, zone) as made:
        yield made


@pytest.fixture
async def neighbour() -> Any:
    async with host_neighbour() as made:
        yield made


@pytest.fixture
async def egress_settings(docker_settings: Settings, hosts: Hosts) -> Settings:
    """The session's Docker settings, with the namespace's DNS server as the enforcer's upstream."""
    return Settings(**(docker_settings.model_dump() | {"egress_resolver": hosts.resolver}))


@pytest.fixture
async def egress_runtime(egress_settings: Settings) -> Any:
    async with docker_runtime_of(egress_settings) as runtime:
        yield runtime


@pytest.mark.docker
async def test_a_sandbox_reaches_the_allowed_hosts_and_nothing_else(
    serve: Any, egress_settings: Settings, egress_runtime: DockerRuntime, hosts: Hosts, neighbour: Neighbour
) -> None:
    settings, docker_runtime = egress_settings, egress_runtime
    allow = ["allowed.egress.test", "*.wild.egress.test", f"{hosts.ip(4)}/32"]
    async with (
        serve(create_app(settings, runtime=docker_runtime)) as base,
        httpx.AsyncClient(timeout=120) as client,
    ):
        conversation_id = await create(client, base, title="egress", egress={"allow": allow})
        shown = (await client.get(f"{base}/conversation/{conversation_id}")).json()
        assert shown["egress"] == {"allow": allow} and shown["internet"] is False
        names = cfg.Names.of(settings.install, UUID(conversation_id))
        assert (await inspect("network", names.network))["Internal"] is True

        results = await probe(
            Agent(client, f"{base}/conversation/{conversation_id}"),
            {
                "http allowed": ("http", f"http://allowed.egress.test:{HTTP_PORT}/"),
                "http wildcard": ("http", f"http://files.wild.egress.test:{HTTP_PORT}/"),
                "http wildcard apex": ("http", f"http://wild.egress.test:{HTTP_PORT}/"),
                "http denied": ("http", f"http://denied.egress.test:{HTTP_PORT}/"),
                "http cidr": ("http", f"http://{hosts.ip(4)}:{HTTP_PORT}/"),
                "http to the relay's neighbour": (
                    "http",
                    f"http://bridge.wild.egress.test:{neighbour.port}/",
                ),
                "http outside cidr": ("http", f"http://{hosts.ip(3)}:{HTTP_PORT}/"),
                "connect allowed": ("connect", f"allowed.egress.test:{HTTP_PORT}"),
                "connect denied": ("connect", f"denied.egress.test:{HTTP_PORT}"),
                "connect cidr": ("connect", f"{hosts.ip(4)}:{HTTP_PORT}"),
                "connect outside cidr": ("connect", f"{hosts.ip(3)}:{HTTP_PORT}"),
                "tls allowed name": ("tls", f"allowed.egress.test:{HTTP_PORT}|files.wild.egress.test"),
                "tls fronted name": ("tls", f"allowed.egress.test:{HTTP_PORT}|denied.egress.test"),
                "resolve allowed": ("resolve", "allowed.egress.test"),
                "resolve denied": ("resolve", "denied.egress.test"),
                "resolve exfiltration": ("resolve", "secret-data.denied.egress.test"),
                "direct allowed host": ("direct", f"{hosts.ip(2)}:{HTTP_PORT}"),
                "direct cidr host": ("direct", f"{hosts.ip(4)}:{HTTP_PORT}"),
                "direct dns": ("dns_direct", hosts.ip(2)),
            },
        )
        assert results["http allowed"] == [
            200,
            f"hello from {hosts.ip(2)} for allowed.egress.test:{HTTP_PORT}",
        ]
        assert results["http wildcard"][0] == 200
        assert results["http cidr"] == [200, f"hello from {hosts.ip(4)} for {hosts.ip(4)}:{HTTP_PORT}"]
        assert results["connect allowed"][0] == 200
        assert results["http to the relay's neighbour"][0] == 502, results["http to the relay's neighbour"]
        assert neighbour.accepted == 0
        assert f"hello from {hosts.ip(2)} for tunnelled" in results["connect allowed"][1]
        assert results["connect cidr"][0] == 200
        for refused in (
            "http wildcard apex",
            "http denied",
            "http outside cidr",
            "connect denied",
            "connect outside cidr",
        ):
            assert results[refused][0] == 403, (refused, results[refused])
            assert "allow-list" in results[refused][1]
        # Our HTTP server answers a ClientHello with a 400; a fronted name never gets to it.
        assert results["tls allowed name"] == [200, "ANSWERED"]
        assert results["tls fronted name"] == [200, "CLOSED"]
        assert results["resolve allowed"] == [hosts.ip(2)]
        assert results["resolve denied"][0] == "error" and results["resolve exfiltration"][0] == "error"
        assert results["direct allowed host"] == results["direct cidr host"] == "FAILED"
        assert results["direct dns"] == "NOTHING"

        log = hosts.log()
        assert f"HTTP {hosts.ip(3)}" not in log  # the denied host was never reached
        asked = {line.split()[1] for line in log if line.startswith("DNS ")}
        assert "allowed.egress.test" in asked  # the upstream resolver is the configured one
        assert not {name for name in asked if "denied" in name or name == "wild.egress.test"}, asked

    # A gateway restarted on a new runtime reads the allow-list back from the labels.
    restarted = await DockerRuntime.connect(settings)
    try:
        handle = await restarted.find(UUID(conversation_id))
        assert handle is not None and handle.spec.egress == tuple(allow)
    finally:
        await restarted.close()
    async with (
        serve(create_app(settings, runtime=docker_runtime)) as base,
        httpx.AsyncClient(timeout=60) as client,
    ):
        shown = (await client.get(f"{base}/conversation/{conversation_id}")).json()
        assert shown["egress"] == {"allow": allow}
