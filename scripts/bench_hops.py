"""Where a warm ``echo hi`` goes on Docker, hop by hop, side by side in one run (issue 15):

1. through the client and a real gateway (``Conversation.run``), as a user sees it;
2. straight to the agent's Unix socket from the host (``POST /task?wait=true``, the gateway's
   own request, over one kept-alive connection; a bare HTTP/1.1 client: no client library);
3. the same from inside the container (the bundle's interpreter), so (2) - (3) is the socket's
   crossing and (1) - (2) is the client and the gateway.

For each of (1) and (2): the wall median and p90, and the CPU (user + system, from /proc) per
command of the bench's client, the gateway, the agent and its reaped children (the helper and
the shell), robust to a loaded machine where the wall times are not; and the sandbox's CFS
throttling meanwhile (``cpu.stat``: a quota can hold short bursts back). The rounds alternate.
Run: ``scripts/bench hops`` (or this file; ``--runs N --rounds N``).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID

import httpx
from benchtools import bench_arguments
from docker_installation import IMAGE, INSTALL, SOCKETS, Gateway, cleanup, sh

from gateway.client import AsyncConvoyClient
from gateway.runtimes import docker_bundle
from gateway.runtimes import docker_config as cfg

_TICK = os.sysconf("SC_CLK_TCK")
#: The bare client of (2) and (3): the standard library only, so the bundle's Python runs it.
_RAW = r"""
import json, socket, statistics, sys, time
path, token, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = json.dumps({"runnable": {"type": "Shell", "command": "echo hi"}}).encode()
head = f"POST /task?wait=true HTTP/1.1\r\nHost: agent\r\nX-Convoy-Token: {token}\r\n"
head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
request, times = head.encode() + body, []
with socket.socket(socket.AF_UNIX) as sock:
    sock.connect(path)
    for _ in range(runs + 3):
        began, answer = time.perf_counter(), b""
        sock.sendall(request)
        while not answer.endswith(b"\r\n0\r\n\r\n"):  # the chunked answer's end
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit(f"the agent closed the connection: {answer!r}")
            answer += chunk
        assert b'hi\\n' in answer, answer
        times.append(time.perf_counter() - began)
print(json.dumps(times[3:]))
"""


def cpu_of(pid: int) -> tuple[float, float]:
    """(own user+system, reaped children's user+system) CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, (int(fields[13]) + int(fields[14])) / _TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_stat(pid: int) -> dict[str, int]:
    """The CFS statistics of ``pid``'s CPU cgroup (v1 or v2); empty when not readable."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        base = {"cpu": "/sys/fs/cgroup/cpu", "": "/sys/fs/cgroup"}.get(controllers)
        stat = Path(f"{base}{path}/cpu.stat") if base else None
        if stat is not None and stat.exists():
            return {key: int(value) for key, value in (row.split() for row in stat.read_text().splitlines())}
    return {}


def first_child(pid: int) -> int:
    return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])


class Sandbox:
    """The agent of one conversation: its host pid, socket, token and container."""

    def __init__(self, container: str, pid: int, socket: str, token: str) -> None:
        self.container, self.pid, self.socket, self.token = container, pid, socket, token

    @classmethod
    async def of(cls, conversation_id: str) -> Sandbox:
        container = cfg.Names.of(INSTALL, UUID(conversation_id)).sandbox
        token = await sh("docker", "exec", "-u", "0", container, "cat", "/data/agent/token")
        init = int(await sh("docker", "inspect", "-f", "{{.State.Pid}}", container))
        agent = first_child(init)  # the agent, under docker-init
        socket = SOCKETS / INSTALL / conversation_id / "agent.sock"  # docker_sockets' layout
        return cls(container, agent, str(socket), token)

    async def raw(self, runs: int, inside: bool) -> list[float]:
        """Wall seconds of ``runs`` bare requests, from the host or from inside the container."""
        if inside:
            python = [docker_bundle.LOADER, "--library-path", f"{docker_bundle.BUNDLE_DIR}/lib"]
            argv = ["docker", "exec", self.container, *python, f"{docker_bundle.BUNDLE_DIR}/bin/python3"]
            argv += ["-I", "-c", _RAW, cfg.AGENT_SOCKET, self.token, str(runs)]
        else:
            argv = [sys.executable, "-c", _RAW, self.socket, self.token, str(runs)]
        times: list[float] = json.loads(await sh(*argv))
        return times


async def measured(
    call: Callable[[], Awaitable[list[float]]], sandbox: Sandbox, gateway_pid: int, runs: int
) -> tuple[list[float], list[float], dict[str, int]]:
    """Wall times of ``call``, CPU ms per command (bench, gateway, agent, children), throttling."""
    stat_before = cpu_stat(sandbox.pid)
    before = (own_cpu(), cpu_of(gateway_pid)[0], *cpu_of(sandbox.pid))
    times = await call()
    after = (own_cpu(), cpu_of(gateway_pid)[0], *cpu_of(sandbox.pid))
    stat_after = cpu_stat(sandbox.pid)
    per = [(b - a) / runs * 1000 for a, b in zip(before, after, strict=True)]
    throttled = {key: stat_after[key] - stat_before.get(key, 0) for key in ("nr_periods", "nr_throttled")}
    return times, per, throttled


def row(name: str, times: list[float], per: list[float | None] | None = None) -> str:
    median, p90 = statistics.median(times) * 1000, statistics.quantiles(times, n=10)[-1] * 1000
    cpu = "  ".join("    -" if value is None else f"{value:5.2f}" for value in per or [])
    return f"  {name:<34}{median:8.2f}{p90:8.2f}   {cpu}"


async def one_round(
    through_gateway: Callable[[], Awaitable[list[float]]], sandbox: Sandbox, gateway_pid: int, runs: int
) -> None:
    times, per, throttled = await measured(through_gateway, sandbox, gateway_pid, runs)
    print(row("client -> gateway -> agent", times, [*per]) + f"   cfs {throttled}")
    times, per, throttled = await measured(lambda: sandbox.raw(runs, False), sandbox, gateway_pid, runs)
    print(row("bare, host -> agent's socket", times, [None, *per[1:]]) + f"   cfs {throttled}")
    print(row("bare, inside the container", await sandbox.raw(runs, True)))


async def main(runs: int, rounds: int) -> None:
    gateway = Gateway(IMAGE)
    async with httpx.AsyncClient(timeout=120) as http:
        try:
            print(f"image {IMAGE}, install {INSTALL}; {runs} commands per hop and round")
            await gateway.start(http)
            assert gateway.process is not None
            async with AsyncConvoyClient(gateway.base, timeout=120) as client:
                convo = await client.create(title="bench")
                sandbox = await Sandbox.of(str(convo.id))

                async def through_gateway() -> list[float]:
                    times = []
                    for _ in range(runs):
                        began = time.perf_counter()
                        assert (await convo.run("echo hi")).stdout == "hi\n"
                        times.append(time.perf_counter() - began)
                    return times

                for _ in range(3):
                    await convo.run("echo hi")
                print(f"  {'':<34}{'median':>8}{'p90':>8}   CPU ms/command: bench gateway agent children")
                for number in range(rounds):
                    print(f"round {number + 1}:")
                    await one_round(through_gateway, sandbox, gateway.process.pid, runs)
                await convo.delete()
        finally:
            await gateway.stop()
            await cleanup()


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=100, runs_help="warm commands per hop and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the hops alternating")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.rounds))
