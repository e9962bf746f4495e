"""The agent token is out of every task's reach: not in any environment, not in ``docker
inspect``, not in a file a task can read; so a task cannot forge what only the gateway may
say (``POST /status``), nor signal the agent that holds it, nor offer it to the OOM killer."""

from __future__ import annotations

import json

import httpx
import pytest
from dockertools import Agent, adocker, inspect
from gw_helpers import make_spec

from gateway.agent_transport import AgentTransport
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import docker_token
from gateway.runtimes.docker import DockerRuntime
from sandbox_agent.protocol import TOKEN_HEADER

pytestmark = pytest.mark.docker

# Every place a task could look for the token, and what it found there.
HUNT = """
import glob, os
for path in ["/proc/1/environ", "/proc/self/environ", f"/proc/{os.getppid()}/environ",
             f"/proc/{os.getppid()}/cmdline", f"/proc/{os.getppid()}/mem", "TOKEN_FILE"]:
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)
        print("READ", path, data.replace(b"\\0", b" ").decode(errors="replace"))
    except OSError as error:
        print("DENIED", path, type(error).__name__)
print("ENV", " ".join(f"{name}={value}" for name, value in os.environ.items()))
for path in glob.glob("/proc/[0-9]*/environ"):
    try:
        print("READ", path, open(path, "rb").read().replace(b"\\0", b" ").decode(errors="replace"))
    except OSError:
        pass
try:
    os.kill(os.getppid(), 0)
    print("AGENT SIGNALLED")
except PermissionError:
    print("AGENT UNTOUCHABLE")
try:
    with open(f"/proc/{os.getppid()}/oom_score_adj", "w") as file:
        file.write("1000")
    print("AGENT VOLUNTEERED")
except OSError:
    print("AGENT KEEPS ITS OOM SCORE")
""".replace("TOKEN_FILE", docker_token.TOKEN_FILE)

# A task trying to tell the agent, as the gateway would, that the conversation failed:
# with nothing, and with every token-like value it can find in the environments it can read;
# at the agent's socket where it has one (a sandbox with no network), else its TCP port.
FORGE = """
import glob, http.client, json, os, socket
candidates = {"", "guess"}
for path in glob.glob("/proc/[0-9]*/environ") + ["/proc/self/environ"]:
    try:
        for item in open(path, "rb").read().split(b"\\0"):
            name, _, value = item.decode(errors="replace").partition("=")
            if "TOKEN" in name.upper():
                candidates.add(value)
    except OSError:
        pass
body = json.dumps({"status": "ERROR", "reason": "forged by a task"}).encode()
class Agent(http.client.HTTPConnection):
    def connect(self):
        if not os.path.exists("AGENT_SOCKET"):
            return super().connect()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("AGENT_SOCKET")
for token in sorted(candidates):
    agent = Agent("127.0.0.1", 8080, timeout=10)
    agent.request("POST", "/status", body, {"Content-Type": "application/json", "TOKEN_HEADER": token})
    print("STATUS", agent.getresponse().status)
""".replace("TOKEN_HEADER", TOKEN_HEADER).replace("AGENT_SOCKET", cfg.AGENT_SOCKET)


async def test_a_task_cannot_read_the_token_anywhere(docker_runtime: DockerRuntime) -> None:
    spec = make_spec(title="hunted")
    handle = await docker_runtime.start(spec)
    names = cfg.Names.of(docker_runtime._install, spec.conversation_id)
    for name in (names.sandbox, names.relay):
        if name == names.relay and await docker_runtime.engine.inspect(name) is None:
            continue  # a sandbox with no network has no relay
        described = await inspect("container", name)
        assert spec.token not in json.dumps(described), f"docker inspect {name} shows the token"
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        agent = Agent(client, handle.base_url, spec.token)
        task, output = await agent.run({"type": "Python", "code": HUNT})
    assert task["status"] == "COMPLETED", task
    assert spec.token not in output, output
    assert f"DENIED {docker_token.TOKEN_FILE} PermissionError" in output, output
    assert "CONVOY_AGENT_TOKEN" not in output, output
    assert "AGENT UNTOUCHABLE" in output and "AGENT KEEPS ITS OOM SCORE" in output, output
    # The engine (a restarted gateway) still reads it back: the file is there, root's alone.
    listing = await adocker("exec", "--user", "10001", names.sandbox, "ls", "-ld", "/data/agent")
    assert listing.startswith("drwx------") and " root root " in listing, listing


async def test_a_task_cannot_forge_a_status_event(docker_runtime: DockerRuntime) -> None:
    spec = make_spec(title="forger")
    handle = await docker_runtime.start(spec)
    async with httpx.AsyncClient(timeout=60, transport=AgentTransport()) as client:
        agent = Agent(client, handle.base_url, spec.token)
        task, output = await agent.run({"type": "Python", "code": FORGE})
        assert task["status"] == "COMPLETED", task
        codes = {line.split()[1] for line in output.splitlines() if line.startswith("STATUS")}
        assert codes == {"401"}, output
        statuses = (await agent.get("/event", type="ConversationStatusUpdate", limit=100)).json()["results"]
        assert not any(event["detail"].get("status") == "ERROR" for event in statuses), statuses
        # The gateway, which has the token, still can.
        info = await agent.get("/agent-info")
        assert info.status_code == 200, info.text
