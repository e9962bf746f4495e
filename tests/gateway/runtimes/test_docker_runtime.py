"""DockerRuntime against a real engine: lifecycle, labels, hardening, recovery, clean-up."""

from __future__ import annotations

import json

import httpx
import pytest
from dockertools import Agent, adocker, alabelled, inspect, volunteer_agent_for_oom
from gw_helpers import make_spec

from gateway.agent_transport import AgentTransport
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.base import ResourceLimits, SandboxStartError, SandboxState
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings
from sandbox_agent.protocol import AGENT_TOKEN_ENV
from tests.helpers import eventually

pytestmark = pytest.mark.docker

MiB = 1024 * 1024


async def test_start_find_list_remove(docker_runtime: DockerRuntime) -> None:
    spec = make_spec(title="first", env={"GREETING": "hello"})
    phases: list[str] = []

    async def progress(phase: str) -> None:
        phases.append(phase)

    handle = await docker_runtime.start(spec, progress)
    # No internet, no egress: no network, no relay (see test_docker_networkless.py).
    assert phases == ["creating volume", "creating container", "starting container", "waiting for agent"]
    assert handle.state is SandboxState.RUNNING and handle.spec == spec
    assert handle.base_url.startswith("http+unix://")
    assert await docker_runtime.find(spec.conversation_id) == handle
    assert handle in await docker_runtime.list()

    async with httpx.AsyncClient(timeout=30, transport=AgentTransport()) as client:
        assert (await client.get(f"{handle.base_url}/health")).status_code == 200
        refused = await client.get(f"{handle.base_url}/agent-info")
        assert refused.status_code in (401, 403)
        agent = Agent(client, handle.base_url, spec.token)
        info = (await agent.get("/agent-info")).json()
        assert info["conversation_id"] == str(spec.conversation_id)
        task, output = await agent.shell("echo $GREETING; id -u; pwd")
        assert task["status"] == "COMPLETED", task
        assert output.split() == ["hello", "10001", "/data/workspace"]

    assert await docker_runtime.remove(spec.conversation_id) is True
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    stopped = await docker_runtime.engine.inspect(names.sandbox)  # None: already removed
    assert stopped is None or not stopped["State"]["Running"], "nothing runs in it once remove returns"
    assert await docker_runtime.find(spec.conversation_id) is None
    assert await docker_runtime.remove(spec.conversation_id) is False  # waits for the rest
    left = await alabelled(f"convoy.conversation-id={spec.conversation_id}")
    assert not any(left.values()), left


async def test_labels_hardening_and_limits_as_docker_reports_them(relayed_runtime: DockerRuntime) -> None:
    docker_runtime = relayed_runtime  # the relay's hardening too
    limits = ResourceLimits(memory_bytes=200 * MiB, cpus=0.5, pids=100)
    spec = make_spec(title="hardened", limits=limits, idle_timeout=600.0, env={"A": "1"})
    await docker_runtime.start(spec)
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    sandbox = await inspect("container", names.sandbox)
    labels = sandbox["Config"]["Labels"]
    assert labels[cfg.CONVERSATION_ID] == str(spec.conversation_id)
    assert labels[cfg.OWNER] == "alice"
    assert labels[cfg.TITLE] == "hardened"
    assert labels[cfg.INSTALL] == docker_runtime._install
    assert labels[cfg.CREATED_AT] == spec.created_at.isoformat()
    assert labels[cfg.IMAGE_VERSION] not in ("", "unknown")
    assert labels[cfg.IDLE_TIMEOUT] == "600.0" and labels[cfg.INTERNET] == "false"

    host = sandbox["HostConfig"]
    # Root of the container for the agent's start-up only, with two capabilities: it reads
    # its token, then works as 10001 and runs tasks as 10001 with none (checked inside, below).
    assert sandbox["Config"]["User"] == "0:0"
    assert "--run-as" in sandbox["Config"]["Cmd"] and "10001:10001" in sandbox["Config"]["Cmd"]
    assert host["CapDrop"] == ["ALL"] and sorted(host["CapAdd"]) == ["CAP_SETGID", "CAP_SETUID"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True and host["Init"] is True and host["Privileged"] is False
    assert "/tmp" in host["Tmpfs"]
    assert host["Memory"] == 200 * MiB and host["MemorySwap"] == 200 * MiB
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 100
    mounts = sandbox["Mounts"]
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [("volume", names.volume, "/data")]
    assert not any("docker.sock" in json.dumps(m) for m in mounts)
    assert spec.token not in json.dumps(sandbox)
    assert not any(AGENT_TOKEN_ENV in item for item in sandbox["Config"]["Env"])

    relay = await inspect("container", names.relay)
    assert relay["Config"]["User"] == "10001:10001" and relay["HostConfig"]["CapDrop"] == ["ALL"]
    assert relay["HostConfig"]["ReadonlyRootfs"] is True
    bindings = relay["HostConfig"]["PortBindings"][f"{cfg.AGENT_PORT}/tcp"]
    assert [binding["HostIp"] for binding in bindings] == ["127.0.0.1"]
    assert not any(AGENT_TOKEN_ENV in item for item in relay["Config"]["Env"])

    network = await inspect("network", names.network)
    assert network["Internal"] is True
    assert network["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
    assert network["Labels"][cfg.CONVERSATION_ID] == str(spec.conversation_id)
    assert set(network["Containers"]) == {sandbox["Id"], relay["Id"]}
    volume = await inspect("volume", names.volume)
    assert volume["Labels"][cfg.INSTALL] == docker_runtime._install

    # The same, as seen from inside.
    handle = await docker_runtime.find(spec.conversation_id)
    assert handle is not None
    async with httpx.AsyncClient(timeout=30, transport=AgentTransport()) as client:
        agent = Agent(client, handle.base_url, spec.token)
        probe = (
            "grep -E '^(Uid|Gid|Groups|CapPrm|CapEff|NoNewPrivs)' /proc/self/status; "
            "touch /opt/x 2>/dev/null && echo rootfs-writable || echo rootfs-read-only; "
            "touch /tmp/x && echo tmp-writable; ls -l /var/run/docker.sock 2>&1 | grep -c 'No such'"
        )
        task, output = await agent.shell(probe)
    assert task["status"] == "COMPLETED", task
    assert "CapEff:\t0000000000000000" in output and "NoNewPrivs:\t1" in output
    assert "CapPrm:\t0000000000000000" in output
    assert "Uid:\t10001\t10001\t10001\t10001" in output and "Gid:\t10001\t10001\t10001\t10001" in output
    assert "rootfs-read-only" in output and "tmp-writable" in output
    assert output.strip().endswith("1")


async def test_a_restarted_gateway_recovers_every_spec_and_token(
    docker_runtime: DockerRuntime, docker_settings: Settings
) -> None:
    spec = make_spec(
        title="survivor",
        env={"X": "y"},
        limits=ResourceLimits(memory_bytes=300 * MiB, cpus=None, pids=64),
        idle_timeout=42.5,
    )
    handle = await docker_runtime.start(spec)
    fresh = await DockerRuntime.connect(docker_settings)
    try:
        found = await fresh.find(spec.conversation_id)
        assert found == handle and found.spec == spec and found.token == spec.token
        assert [h.spec for h in await fresh.list() if h.conversation_id == spec.conversation_id] == [spec]
    finally:
        await fresh.close()


async def test_a_sandbox_that_cannot_start_is_an_error_with_its_logs_and_leaves_nothing(
    docker_settings: Settings,
) -> None:
    # Another user than the volume's owner: the agent cannot open its event log and exits.
    stranger = docker_settings.model_copy(update={"docker_user": "10002:10002"})
    runtime = await DockerRuntime.connect(stranger)
    spec = make_spec()
    try:
        with pytest.raises(SandboxStartError) as failure:
            await runtime.start(spec)
    finally:
        await runtime.close()
    reason = str(failure.value)
    assert "exited with code" in reason and "last log lines" in reason, reason
    assert "Permission denied" in reason, reason
    left = await alabelled(f"convoy.conversation-id={spec.conversation_id}")
    assert not any(left.values()), left


async def test_an_agent_killed_for_memory_is_reported_as_oom(docker_runtime: DockerRuntime) -> None:
    spec = make_spec(limits=ResourceLimits(memory_bytes=128 * MiB))
    handle = await docker_runtime.start(spec)
    # The agent is made the OOM killer's first choice (from outside: a task cannot touch
    # its agent), then a task hogs memory: the agent dies of the memory limit, and with it
    # the container.
    await volunteer_agent_for_oom(cfg.Names.of(docker_runtime._install, spec.conversation_id).sandbox)
    # The task inherits the agent's score, and takes its own back to 0 first.
    hog = (
        "open('/proc/self/oom_score_adj', 'w').write('0')\n"
        "chunks = []\n"
        "while True:\n"
        "    chunks.append(bytearray(4 << 20))\n"
    )
    async with httpx.AsyncClient(timeout=30, transport=AgentTransport()) as client:
        await Agent(client, handle.base_url, spec.token).start_task({"type": "Python", "code": hog})

    async def exited() -> bool:
        found = await docker_runtime.find(spec.conversation_id)
        return found is not None and found.state is SandboxState.EXITED

    await eventually(exited, within=120, what="the agent is OOM-killed")
    found = await docker_runtime.find(spec.conversation_id)
    assert found is not None and found.oom_killed is True and found.exit_code == 137
    assert found.reason is not None and "out of memory" in found.reason and "OOM" in found.reason


async def test_exited_sandboxes_are_reported_with_their_reason_then_cleaned_up(
    docker_runtime: DockerRuntime,
) -> None:
    crashed, healthy = make_spec(title="crashed"), make_spec(title="healthy")
    await docker_runtime.start(crashed)
    await docker_runtime.start(healthy)
    names = cfg.Names.of(docker_runtime._install, crashed.conversation_id)
    await adocker("kill", "--signal", "KILL", names.sandbox)

    handles = {h.conversation_id: h for h in await docker_runtime.list()}
    gone = handles[crashed.conversation_id]
    assert gone.state is SandboxState.EXITED and gone.exit_code == 137 and gone.oom_killed is False
    assert gone.reason is not None and "137" in gone.reason
    assert gone.spec == crashed
    assert handles[healthy.conversation_id].state is SandboxState.RUNNING

    assert await docker_runtime.cleanup_orphans() >= 1
    assert await docker_runtime.find(crashed.conversation_id) is None
    left = await alabelled(f"convoy.conversation-id={crashed.conversation_id}")
    assert not any(left.values()), left
    assert (await docker_runtime.find(healthy.conversation_id)) is not None


async def test_volumes_and_networks_without_a_sandbox_are_removed(docker_runtime: DockerRuntime) -> None:
    spec = make_spec(title="half-deleted")
    await docker_runtime.start(spec)
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    # A gateway killed in the middle of remove(): containers gone, volume and network left.
    await adocker("rm", "-f", names.sandbox, names.relay)
    docker_runtime.orphan_age = 0.0
    assert await docker_runtime.cleanup_orphans() == 2
    left = await alabelled(f"convoy.conversation-id={spec.conversation_id}")
    assert not any(left.values()), left


async def test_a_sandbox_whose_relay_is_gone_counts_as_exited(relayed_runtime: DockerRuntime) -> None:
    docker_runtime = relayed_runtime
    spec = make_spec()
    await docker_runtime.start(spec)
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    await adocker("rm", "-f", names.relay)
    found = await docker_runtime.find(spec.conversation_id)
    assert found is not None and found.state is SandboxState.EXITED and found.spec == spec
    assert found.reason == "its relay container is gone"
    assert await docker_runtime.remove(spec.conversation_id) is True
    assert await docker_runtime.remove(spec.conversation_id) is False  # waits for the rest
    left = await alabelled(f"convoy.conversation-id={spec.conversation_id}")
    assert not any(left.values()), left
