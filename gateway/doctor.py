"""``convoy doctor``: does this host's Docker keep sandboxes apart? Checks, one by one.

:func:`run_checks` asks the engine (it answers, the sandbox image is there), then
starts two fresh conversations with the Docker runtime, under an installation
name of their own (``doctor-<random>``) so no gateway ever adopts them, and
checks from inside one of them (tasks, see :mod:`gateway.doctor_probes`) and
from the engine's side that: its code runs as non-root with no capability; its
root is read-only; its pids and memory limits stop a fork bomb and a memory hog;
it has no network interface but loopback (with neither internet nor egress: no
relay); it reaches neither the host, nor the gateway, nor the other sandbox (its
address, or its agent's Unix socket), nor the cloud metadata address, nor the
internet; no Docker socket is inside. Last, it
removes everything labelled with its installation name and checks nothing is
left. Nothing is sent from the host to any address; every probe runs inside.

Every check is a :class:`Check` (name, pass/fail, why); when a step others
depend on fails, those are reported as failed with the reason they did not run.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import socket
import time
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx

from gateway import doctor_probes as probes
from gateway.agent_transport import AgentTransport, socket_of
from gateway.doctor_probes import Check
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import ResourceLimits, RuntimeFailure, SandboxHandle, SandboxSpec
from gateway.runtimes.docker import AiodockerEngine, DockerRuntime
from gateway.settings import Settings
from sandbox_agent.protocol import TOKEN_HEADER

MiB = 1024 * 1024
#: Small limits, so the fork bomb and the memory hog are over quickly.
LIMITS = ResourceLimits(memory_bytes=192 * MiB, cpus=None, pids=64)
CHECKS = (
    "engine", "image", "sandbox", "non-root", "read-only-root", "pids-limit", "memory-limit",
    "loopback-only", "no-host", "no-gateway", "no-other-sandbox", "no-metadata", "no-internet",
    "no-docker-socket",
)  # fmt: skip
METADATA = ("169.254.169.254", 80)
UNROUTABLE = ("192.0.2.1", 443)  # TEST-NET-1: routed nowhere, answered by no one
_FINAL = {"COMPLETED", "ERROR", "CANCELLED"}


class _Stop(Exception):
    """A step the remaining checks depend on failed (the message says which and why)."""


async def run_checks(settings: Settings) -> tuple[str, list[Check]]:
    """``(installation name used, checks)``; every name of :data:`CHECKS` is answered, then ``cleanup``."""
    install = f"doctor-{secrets.token_hex(4)}"
    settings = settings.model_copy(
        update={"install": install, "start_timeout": max(settings.start_timeout, 120)}
    )
    checks: list[Check] = []
    runtime: DockerRuntime | None = None
    try:
        await _engine_and_image(settings, checks)
        runtime = await DockerRuntime.connect(settings)
        checks += await _sandbox_checks(runtime, settings)
    except (_Stop, RuntimeFailure, httpx.HTTPError) as error:
        done = {check.name for check in checks}
        checks += [Check(name, False, f"not run: {error}") for name in CHECKS if name not in done]
    finally:
        checks.append(await _cleanup(runtime, settings))
    return install, checks


async def _engine_and_image(settings: Settings, checks: list[Check]) -> None:
    """Append the ``engine`` and ``image`` checks; :class:`_Stop` when either fails."""
    try:
        engine = await AiodockerEngine.open(settings.docker_url)
    except RuntimeFailure as error:
        checks.append(Check("engine", False, str(error)))
        raise _Stop("no engine answers") from None
    try:
        version = await engine.version()
        checks.append(Check("engine", True, f"Docker {version.get('Version', '?')} answers"))
        image = await engine.image(settings.docker_image)
    finally:
        await engine.close()
    if image is None:
        checks.append(Check("image", False, f"{settings.docker_image} is missing: run scripts/build-images"))
        raise _Stop(f"the image {settings.docker_image} is missing")
    label = ((image.get("Config") or {}).get("Labels") or {}).get(cfg.IMAGE_VERSION, "unknown")
    checks.append(Check("image", True, f"{settings.docker_image} is there (version {label})"))


def _spec(title: str) -> SandboxSpec:
    return SandboxSpec(
        conversation_id=uuid4(),
        owner="convoy-doctor",
        title=title,
        token=secrets.token_urlsafe(24),
        created_at=datetime.now(UTC),
        limits=LIMITS,
    )


async def _sandbox_checks(runtime: DockerRuntime, settings: Settings) -> list[Check]:
    began = time.monotonic()
    # Both starts run to their end (no start still under way when the clean-up comes).
    started = await asyncio.gather(
        runtime.start(_spec("doctor probe")), runtime.start(_spec("doctor neighbour")), return_exceptions=True
    )
    for outcome in started:
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, RuntimeFailure):
                raise outcome
            raise _Stop(f"no sandbox started: {outcome}")
    probe, neighbour = (outcome for outcome in started if isinstance(outcome, SandboxHandle))
    checks = [Check("sandbox", True, f"two fresh sandboxes started in {time.monotonic() - began:.1f}s")]
    names = cfg.Names.of(settings.install, probe.conversation_id)
    info = await runtime.engine.inspect(names.sandbox) or {}
    targets = await _targets(runtime, settings, probe, neighbour)
    async with httpx.AsyncClient(timeout=30, transport=AgentTransport()) as client:
        agent = _Agent(client, probe)
        every = sorted({address for addresses in targets.values() for address in addresses})
        facts = await agent.answer(_python(probes.INSIDE, json.dumps(every), timeout=60))
        checks += [probes.non_root(facts, info), probes.read_only(facts, info)]
        checks.append(await _pids(agent, info))
        checks.append(await _memory(agent, info))
    checks.append(probes.loopback_only(facts, info))
    checks += probes.network(facts, targets)
    checks.append(probes.docker_socket(facts, info))
    return checks


def _python(code: str, *args: str, timeout: float) -> dict[str, Any]:
    """A task running ``code`` with ``args`` in the sandbox's python3, ended after ``timeout`` seconds."""
    return {"type": "Shell", "command": ["python3", "-c", code, *args], "timeout": timeout}


class _Agent:
    """Runs probes as tasks of one sandbox's agent, straight (with its token)."""

    def __init__(self, client: httpx.AsyncClient, handle: SandboxHandle) -> None:
        self.client, self.base = client, handle.base_url
        self.headers = {TOKEN_HEADER: handle.token}

    async def run(self, runnable: dict[str, Any]) -> tuple[dict[str, Any], str]:
        made = await self.client.post(f"{self.base}/task", json={"runnable": runnable}, headers=self.headers)
        if made.status_code != 201:
            raise _Stop(f"the agent refused a probe: {made.status_code} {made.text[:200]}")
        task = dict(made.json())
        while task["status"] not in _FINAL:
            await asyncio.sleep(0.2)
            task = dict(
                (await self.client.get(f"{self.base}/task/{task['id']}", headers=self.headers)).json()
            )
        return task, await self._output(task["id"])

    async def _output(self, task_id: str) -> str:
        chunks: list[str] = []
        params: dict[str, str | int] = {"task_id": task_id, "type": "TaskOutput", "limit": 100}
        while True:
            page = (await self.client.get(f"{self.base}/event", params=params, headers=self.headers)).json()
            chunks += [event["detail"]["data"] for event in page["results"]]
            if not page.get("next_page_id"):
                return "".join(chunks)
            params["page_id"] = page["next_page_id"]

    async def answer(self, runnable: dict[str, Any]) -> dict[str, Any]:
        task, output = await self.run(runnable)
        found = probes.answers(output)
        if not found:
            raise _Stop(f"a probe gave no answer ({task['status']}: {task.get('error')}): {output[-300:]}")
        return found[-1]

    async def alive(self) -> bool:
        try:
            return (await self.client.get(f"{self.base}/agent-info", headers=self.headers)).status_code == 200
        except httpx.HTTPError:
            return False


async def _pids(agent: _Agent, info: dict[str, Any]) -> Check:
    limit = int((info.get("HostConfig") or {}).get("PidsLimit") or 0)
    bound = 4 * (LIMITS.pids or 64)
    result = await agent.answer(_python(probes.FORK_BOMB, str(bound), timeout=60))
    ok = result["stopped"] == "EAGAIN" and limit > 0 and result["forked"] < limit
    stopped = f"stopped by {result['stopped']}" if result["stopped"] else "never stopped"
    return Check(
        "pids-limit", ok, f"a fork bomb made {result['forked']} processes, {stopped} (PidsLimit {limit})"
    )


async def _memory(agent: _Agent, info: dict[str, Any]) -> Check:
    limit = int((info.get("HostConfig") or {}).get("Memory") or 0)
    bound = 4 * (LIMITS.memory_bytes or 0) // MiB
    task, output = await agent.run(_python(probes.MEMORY_HOG, str(bound), timeout=90))
    found = probes.answers(output)
    allocated = max((item.get("allocated_mib", 0) for item in found), default=0)
    survived = any(item.get("survived") for item in found) or task["status"] == "COMPLETED"
    alive = await agent.alive()
    ok = limit > 0 and not survived and allocated * MiB < 2 * limit and alive
    how = "survived" if survived else f"was stopped ({task.get('error') or task['status']})"
    agent_now = "still answers" if alive else "died"
    detail = f"a memory hog {how} after {allocated} MiB (Memory {limit // MiB} MiB); the agent {agent_now}"
    return Check("memory-limit", ok, detail)


async def _targets(
    runtime: DockerRuntime, settings: Settings, probe: SandboxHandle, neighbour: SandboxHandle
) -> dict[str, list[tuple[str, int]]]:
    """What the sandbox must not reach, by check; nothing here is ever contacted from the host."""
    engine, install = runtime.engine, settings.install
    own = cfg.Names.of(install, probe.conversation_id)
    other = cfg.Names.of(install, neighbour.conversation_id)
    # The host's addresses: its own, and its address on every network of this conversation.
    primary = _primary_ip()
    host_ips = {primary} if primary else set()
    for name in (own.sandbox, own.relay):
        networks = ((await engine.inspect(name) or {}).get("NetworkSettings") or {}).get("Networks") or {}
        host_ips |= {net["Gateway"] for net in networks.values() if net.get("Gateway")}
    for network in await engine.networks({"name": [own.network, "bridge"]}):
        host_ips |= {_gateway_of(ipam) for ipam in (network.get("IPAM") or {}).get("Config") or []}
    host_ips.discard("")
    gateway = [(ip, settings.port) for ip in sorted(host_ips)]
    # A gateway in a container: the members of the shared network but relays.
    for member in await engine.containers({"network": [settings.docker_network]}):
        if (member.get("Labels") or {}).get(cfg.ROLE) == cfg.RELAY:
            continue
        gateway += [(ip, settings.port) for ip in await _addresses(runtime, member["Id"])]
    neighbours: list[tuple[str, int]] = []
    for name in (other.sandbox, other.relay):
        neighbours += [(ip, cfg.AGENT_PORT) for ip in await _addresses(runtime, name)]
    socket = socket_of(neighbour.base_url)
    if socket is not None:  # a sandbox with no network: its agent's socket, at the host's path
        neighbours.append((socket, 0))
    return {
        "no-host": [(ip, 22) for ip in sorted(host_ips)],
        "no-gateway": gateway,
        "no-other-sandbox": neighbours,
        "no-metadata": [METADATA],
        "no-internet": [UNROUTABLE],
    }


def _gateway_of(ipam: dict[str, Any]) -> str:
    """The host's address on a network (the engine may leave it out of the default bridge's
    configuration: then the first of its subnet)."""
    if ipam.get("Gateway"):
        return str(ipam["Gateway"])
    try:
        subnet = ipaddress.ip_network(ipam.get("Subnet", ""))
    except ValueError:
        return ""
    return str(subnet.network_address + 1) if subnet.version == 4 else ""


async def _addresses(runtime: DockerRuntime, container: str) -> list[str]:
    """The IPv4 addresses of ``container`` on all its networks."""
    networks = ((await runtime.engine.inspect(container) or {}).get("NetworkSettings") or {}).get("Networks")
    return [net["IPAddress"] for net in (networks or {}).values() if net.get("IPAddress")]


def _primary_ip() -> str | None:
    """The host's own outgoing address (``None`` without a route): a UDP "connect" only
    picks it, nothing is sent."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(UNROUTABLE)
            return str(sock.getsockname()[0])
    except OSError:
        return None


async def _cleanup(runtime: DockerRuntime | None, settings: Settings) -> Check:
    """Remove every conversation of the doctor's installation; pass when the engine holds nothing of it."""
    if runtime is None:
        return Check("cleanup", True, "nothing was started")
    try:
        for handle in await runtime.list():
            await runtime.remove(handle.conversation_id)
        await runtime.removals_done()
        runtime.orphan_age = 0.0
        await runtime.cleanup_orphans()
        where = cfg.install_filter(settings.install)
        left = len(await runtime.engine.containers(where)) + len(await runtime.engine.volumes(where))
        left += len(await runtime.engine.networks(where))
        left += await runtime.forget_socket_dirs()
    except RuntimeFailure as error:
        return Check("cleanup", False, f"could not clean up convoy.install={settings.install}: {error}")
    finally:
        await runtime.close()
    return Check("cleanup", left == 0, f"{left} objects labelled convoy.install={settings.install} left")
