"""Where one warm ``echo hi`` goes, per process, on the process runtime (no Docker).

A real gateway (process runtime) runs as a subprocess with one conversation; the bench's
client runs ``Conversation.run("echo hi")`` N times and reads the CPU time (user + system,
from /proc) of the client, the gateway, the agent and the agent's reaped children (the
shell), before and after: CPU per command is robust to a loaded machine; the wall median
is printed too. Run: ``scripts/bench exec`` (or this file: ``--runs N``, ``--profile FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_gateway import _gateway, _until

from gateway.client import AsyncConvoyClient

_TICK = os.sysconf("SC_CLK_TCK")
#: ``--profile FILE``: the client's own calls, profiled by CPU time, written there.
PROFILE = ""


def _cpu(pid: int) -> tuple[float, float]:
    """(own user+system, reaped children user+system) CPU seconds of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, (int(fields[13]) + int(fields[14])) / _TICK


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="convoy-bench-exec-") as tmp:
        state = Path(tmp)
        async with _gateway(state) as (url, gateway_pid), httpx.AsyncClient(timeout=120) as http:
            cid = (await http.post(f"{url}/conversation", json={"title": "bench"})).json()["id"]
            await _until(http, f"{url}/conversation/{cid}", "READY")
            meta = json.loads((state / "bench" / cid / "meta.json").read_text())
            agent_pid = int(meta["pid"])
            async with AsyncConvoyClient(url, timeout=120) as client:
                convo = await client.open(cid)
                for _ in range(20):
                    await convo.run("echo hi")
                profile = None
                if PROFILE:
                    import cProfile

                    profile = cProfile.Profile(time.process_time)
                    profile.enable()
                times = []
                before = (_self_cpu(), _cpu(gateway_pid)[0], *_cpu(agent_pid))
                for _ in range(runs):
                    began = time.perf_counter()
                    result = await convo.run("echo hi")
                    times.append(time.perf_counter() - began)
                    assert result.stdout == "hi\n", result
                after = (_self_cpu(), _cpu(gateway_pid)[0], *_cpu(agent_pid))
                if profile is not None:
                    profile.disable()
                    profile.dump_stats(PROFILE)
            await http.delete(f"{url}/conversation/{cid}")
    names = ("client", "gateway", "agent", "shell (agent's children)")
    per = [(b - a) / runs * 1000 for a, b in zip(before, after, strict=True)]
    print(f"warm echo hi x{runs}: median {statistics.median(times) * 1000:.2f} ms, "
          f"p90 {statistics.quantiles(times, n=10)[-1] * 1000:.2f} ms")  # fmt: skip
    for name, ms in zip(names, per, strict=True):
        print(f"  CPU {name:<26}{ms:7.2f} ms/command")
    print(f"  CPU total{'':<22}{sum(per):7.2f} ms/command")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--profile", default="", help="write a CPU profile of the client here")
    args = parser.parse_args()
    PROFILE = args.profile
    asyncio.run(main(args.runs))
    sys.exit(0)
