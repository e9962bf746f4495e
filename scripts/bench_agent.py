"""Agent benchmark: one real ``convoy-agent`` process, measured from outside.

Prints, each beside its target where ARCHITECTURE.md sets one:
- time from process start to ``/ready`` answering 200;
- idle RSS once ready: ``VmRSS`` and its anonymous part ``RssAnon`` (from /proc), which
  is what a container is charged for (shared-library pages are cache that the engine's
  figure leaves out; it adds ~3 MB of kernel memory); target under 40 MB;
- events per second delivered to one WebSocket subscriber (a Ticker with
  interval 0: first Tick received to last); target 20,000/s;
- upload and download throughput of a 256 MiB file, with the agent's peak RSS
  (``VmHWM``) while doing so - streaming keeps it flat.

Only loopback is used. Run: ``scripts/bench agent`` (or this file directly).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import websockets
from benchtools import free_port

from sandbox_agent.protocol import AGENT_TOKEN_ENV, RESERVED_ENV_PREFIX, TOKEN_HEADER

TOKEN = "bench-token"
HEADERS = {TOKEN_HEADER: TOKEN}
MiB = 1024 * 1024
TICKS = 100_000
FILE_BYTES = 256 * MiB
BOUNDARY = "benchboundary0123456789"


def proc_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def line(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<38} {value:>18}   {target}")


async def start_agent(root: Path) -> tuple[asyncio.subprocess.Process, str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(RESERVED_ENV_PREFIX)}
    env[AGENT_TOKEN_ENV] = TOKEN
    agent = str(Path(sys.executable).parent / "convoy-agent")
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        agent,
        "--port",
        str(port),
        "--workspace",
        str(root / "ws"),
        "--state-dir",
        str(root / "state"),
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if process.returncode is not None:
                raise SystemExit(f"agent exited with {process.returncode}")
            try:
                if (await client.get(f"{url}/ready")).status_code == 200:
                    return process, url, time.perf_counter() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.005)


async def events_per_second(url: str) -> tuple[float, int]:
    ws_url = "ws" + url.removeprefix("http") + "/ws?after_seq=-1"
    async with (
        websockets.connect(ws_url, additional_headers=HEADERS, max_queue=None) as ws,
        httpx.AsyncClient(base_url=url, headers=HEADERS) as client,
    ):
        runnable = {"type": "Ticker", "interval": 0, "iterations": TICKS}
        (await client.post("/task", json={"runnable": runnable})).raise_for_status()
        ticks = 0
        first = 0.0
        while ticks < TICKS:
            frame = await ws.recv(decode=False)
            if b'"type":"Tick"' in frame:
                if ticks == 0:
                    first = time.perf_counter()
                ticks += 1
        elapsed = time.perf_counter() - first
    return (TICKS - 1) / elapsed, ticks


async def upload(url: str, pid: int) -> float:
    block = os.urandom(MiB)

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(FILE_BYTES // MiB):
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {**HEADERS, "content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        started = time.perf_counter()
        response = await client.post("/upload/", content=body())
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    return FILE_BYTES / MiB / elapsed


async def download(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=600) as client:
        started = time.perf_counter()
        total = 0
        async with client.stream("GET", "/file-content/big.bin") as response:
            async for data in response.aiter_raw():
                total += len(data)
        elapsed = time.perf_counter() - started
    assert total == FILE_BYTES, total
    return total / MiB / elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="convoy-bench-") as tmp:
        process, url, ready_after = await start_agent(Path(tmp))
        try:
            await asyncio.sleep(1.0)  # let start-up garbage settle
            idle_rss = proc_kb(process.pid, "VmRSS") / 1024
            idle_anon = proc_kb(process.pid, "RssAnon") / 1024
            print(f"convoy-agent (pid {process.pid}) on {url}")
            line("process start -> /ready", f"{ready_after * 1000:.0f} ms")
            line("idle RSS / anonymous", f"{idle_rss:.1f} / {idle_anon:.1f} MiB", "target < 40 MB")
            rate, ticks = await events_per_second(url)
            line(f"events/s to one WebSocket ({ticks} Ticks)", f"{rate:,.0f} /s", "target 20,000/s")
            line("RSS after the event burst", f"{proc_kb(process.pid, 'VmRSS') / 1024:.1f} MB")
            before = proc_kb(process.pid, "VmHWM") / 1024
            up = await upload(url, process.pid)
            line(f"upload {FILE_BYTES // MiB} MiB (multipart)", f"{up:,.0f} MB/s")
            down = await download(url)
            line(f"download {FILE_BYTES // MiB} MiB", f"{down:,.0f} MB/s")
            peak = proc_kb(process.pid, "VmHWM") / 1024
            line("peak RSS before / after the transfers", f"{before:.1f} / {peak:.1f} MB", "flat: streamed")
        finally:
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
            line("exit code after SIGTERM", str(code), "0: graceful")


if __name__ == "__main__":
    asyncio.run(main())
