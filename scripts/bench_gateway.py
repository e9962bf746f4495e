"""Gateway benchmark: the proxy's overhead, measured side by side in one run.

A real gateway (``run_server``, process runtime) runs as a subprocess with one
conversation; the same agent is measured directly (its port and token read from
the runtime's metadata) and through the gateway:

- p50 / p99 latency of a small request (``GET agent-info``), the two sides interleaved
  request by request; target <= 1.5x; and the gateway's CPU time per proxied request;
- download throughput of a 1 GiB file; target >= 0.8x: median of 3 alternating runs, with
  the bench's own client (httpx: Python, about 2 s of CPU per GiB, which caps what it can
  measure) and with curl (C: what the servers can send), so a slow client is not mistaken
  for a slow server;
- the gateway's RSS before, at its peak during, and after streaming 1 GiB (flat);
- events per second over one WebSocket (a Ticker with no interval).

Only loopback is used. Run: ``scripts/bench gateway`` (or this file); ``--small`` measures
the small request only (a quick check of the hop).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets
from benchtools import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN_HEADER = "X-Convoy-Token"
GIB = 1024**3
REQUESTS = 2000
EVENTS = 100_000
_RUN = "from gateway.server import run_server; from gateway.settings import Settings; run_server(Settings())"


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@asynccontextmanager
async def _gateway(state: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVOY_")}
    env |= {"CONVOY_PORT": str(port), "CONVOY_STATE_DIR": str(state), "CONVOY_RUNTIME": "process"}
    env["CONVOY_INSTALL"] = "bench"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RUN, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
        yield url, process.pid
    finally:
        process.terminate()
        await process.wait()


async def _latencies(
    client: httpx.AsyncClient, direct: tuple[str, dict[str, str]], gateway: tuple[str, dict[str, str]]
) -> tuple[list[float], list[float]]:
    """Latencies of the same request straight to the agent and through the gateway,
    interleaved one by one, so both sides see the same load on a shared machine."""
    for _ in range(200):  # warm up: connections, caches
        for url, headers in (direct, gateway):
            await client.get(url, headers=headers)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(REQUESTS):
        for side, (url, headers) in zip(times, (direct, gateway), strict=True):
            began = time.perf_counter()
            response = await client.get(url, headers=headers)
            side.append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
    return times


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _gateway_cpu_per_request(client: httpx.AsyncClient, url: str, pid: int) -> float:
    """The gateway's own CPU time per proxied small request, in microseconds (robust to load)."""
    before = _cpu_seconds(pid)
    for _ in range(REQUESTS):
        await client.get(url)
    return (_cpu_seconds(pid) - before) / REQUESTS * 1e6


async def _download(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], watch: int | None
) -> dict[str, float]:
    peak = _rss_mib(watch) if watch else 0.0
    received = 0
    began = time.perf_counter()
    async with client.stream("GET", url, headers=headers) as response:
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if watch and received % (64 * 1024 * 1024) < len(chunk):
                peak = max(peak, _rss_mib(watch))
    seconds = time.perf_counter() - began
    assert received == GIB, received
    return {"mib_s": received / seconds / 1024**2, "peak": peak}


async def _curl_mib_s(url: str, headers: dict[str, str]) -> float:
    """Download throughput as curl measures it (its own C client), in MiB/s."""
    argv = ["curl", "-sf", "-o", "/dev/null", "-w", "%{speed_download}", url]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0, argv
    return float(out) / 1024**2


async def _downloads(
    client: httpx.AsyncClient,
    direct: tuple[str, dict[str, str]],
    gateway: tuple[str, dict[str, str]],
    pid: int,
) -> dict[str, float]:
    """Median MiB/s of 3 alternating runs each way, per client; the gateway's peak RSS."""
    runs: dict[str, list[float]] = {"direct": [], "gateway": [], "direct curl": [], "gateway curl": []}
    peak = 0.0
    curl = shutil.which("curl") is not None
    for _ in range(3):
        runs["direct"].append((await _download(client, *direct, None))["mib_s"])
        through = await _download(client, *gateway, pid)
        runs["gateway"].append(through["mib_s"])
        peak = max(peak, through["peak"])
        if curl:
            runs["direct curl"].append(await _curl_mib_s(*direct))
            runs["gateway curl"].append(await _curl_mib_s(*gateway))
    figures = {name: statistics.median(values) for name, values in runs.items() if values}
    return figures | {"peak": peak}


async def _events(ws_url: str, headers: dict[str, str], total: int) -> float:
    """Frames per second while replaying ``total`` stored events to one client."""
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None, compression=None) as ws:
        began = time.perf_counter()
        for _ in range(total):
            await asyncio.wait_for(ws.recv(), 60)
        return total / (time.perf_counter() - began)


def _create(path: Path) -> Path:
    path.touch()
    return path


async def _until(client: httpx.AsyncClient, url: str, status: str) -> None:
    for _ in range(6000):
        if (await client.get(url)).json()["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} never became {status}")


async def _last_seq(client: httpx.AsyncClient, through: str) -> int:
    """The seq of the newest event: the log holds more than EVENTS, so page on from there."""
    page_id, last = None, EVENTS
    while True:
        params: dict[str, Any] = {"limit": 100, "after_seq": last}
        if page_id:
            params["page_id"] = page_id
        page = (await client.get(f"{through}/event", params=params)).json()
        if not page["results"]:
            return last
        last = page["results"][-1]["seq"]
        page_id = page["next_page_id"]
        if page_id is None:
            return last


def _ms(times: list[float], q: int) -> float:
    return statistics.quantiles(times, n=100)[q - 1] * 1000


def _print_small(direct_times: list[float], gateway_times: list[float], gateway_cpu: float) -> None:
    print(f"{'':<34}{'direct':>12}{'gateway':>12}  {'unit':<6}{'ratio':>8}  target")
    direct, through = _ms(direct_times, 50), _ms(gateway_times, 50)
    print(_row("small request p50 (agent-info)", direct, through, "ms", "<= 1.5x"))
    print(_row("small request p99 (agent-info)", _ms(direct_times, 99), _ms(gateway_times, 99), "ms", "-"))
    print(f"(the gateway's CPU per proxied small request: {gateway_cpu:.0f} us)")


def _row(name: str, direct: float, gateway: float, unit: str, target: str) -> str:
    return f"{name:<34}{direct:>12.2f}{gateway:>12.2f}  {unit:<6}{gateway / direct:>7.2f}x  {target}"


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="convoy-bench-") as tmp:
        state = Path(tmp)
        async with _gateway(state) as (url, pid), httpx.AsyncClient(timeout=120) as client:
            cid = (await client.post(f"{url}/conversation", json={"title": "bench"})).json()["id"]
            await _until(client, f"{url}/conversation/{cid}", "READY")
            meta = json.loads(await asyncio.to_thread((state / "bench" / cid / "meta.json").read_text))
            agent, token = f"http://127.0.0.1:{meta['port']}", {TOKEN_HEADER: meta["spec"]["token"]}
            through = f"{url}/conversation/{cid}"
            # Sparse: the agent's disk is not what is measured.
            os.truncate(_create(state / "bench" / cid / "workspace" / "big.bin"), GIB)

            direct_times, gateway_times = await _latencies(
                client, (f"{agent}/agent-info", token), (f"{through}/agent-info", {})
            )
            gateway_cpu = await _gateway_cpu_per_request(client, f"{through}/agent-info", pid)
            if "--small" in sys.argv:
                _print_small(direct_times, gateway_times, gateway_cpu)
                await client.delete(through)
                return
            rss_before = _rss_mib(pid)
            downloads = await _downloads(
                client, (f"{agent}/file-content/big.bin", token), (f"{through}/file-content/big.bin", {}), pid
            )
            rss_after = _rss_mib(pid)

            # Events: a Ticker fills the log (its live rate is the agent's), then the whole log is
            # replayed to one client, straight from the agent and through the gateway's WebSocket proxy.
            body = {"runnable": {"type": "Ticker", "interval": 0, "iterations": EVENTS}}
            began = time.perf_counter()
            task = (await client.post(f"{through}/task", json=body)).json()["id"]
            await _until(client, f"{through}/task/{task}", "COMPLETED")
            produced = EVENTS / (time.perf_counter() - began)
            total = await _last_seq(client, through)
            direct_eps = await _events(f"ws{agent.removeprefix('http')}/ws?after_seq=0", token, total)
            gateway_eps = await _events(f"ws{through.removeprefix('http')}?after_seq=0", {}, total)
            await client.delete(through)

    _print_small(direct_times, gateway_times, gateway_cpu)
    print(
        _row("download 1 GiB (httpx client)", downloads["direct"], downloads["gateway"], "MiB/s", ">= 0.8x")
    )
    if "direct curl" in downloads:
        direct_curl, gateway_curl = downloads["direct curl"], downloads["gateway curl"]
        print(_row("download 1 GiB (curl client)", direct_curl, gateway_curl, "MiB/s", ">= 0.8x"))
    print(_row("events to one WebSocket (replay)", direct_eps, gateway_eps, "ev/s", ">= 20,000/s"))
    print(f"(the agent's Ticker produced {produced:,.0f} events/s live while filling the log)")
    print(
        f"gateway RSS: {rss_before:.1f} MiB before, {downloads['peak']:.1f} MiB peak while streaming 1 GiB, "
        f"{rss_after:.1f} MiB after (target: flat)"
    )


if __name__ == "__main__":
    asyncio.run(main())
