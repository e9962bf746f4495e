"""The gateway's periodic loops at density, without the containers: a real gateway
(``convoy serve --runtime docker``) on a stand-in engine (``scripts/stub_docker.py``) that
lists ``n`` idle sandboxes with the real engine's shapes and sizes. The gateway adopts them
at start; then, while its sync, reconcile and reap loops run on their default intervals,
``GET /conversation/{id}`` is asked back to back for ``--seconds`` and its p50, p99 and
worst are printed for each ``n`` (``--count 500 --count 2000``), with the engine calls the
gateway made per second.

``--profile DIR`` runs each gateway under cProfile (``DIR/gateway-N.prof``);
``--slow MS`` runs it in asyncio debug mode and logs every loop step over ``MS`` ms
(debug mode slows everything: its latencies are not comparable).
Nothing is started on a real engine; the stand-ins are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchtools import free_port

_HERE = Path(__file__).resolve().parent
#: Seconds with no request over which the gateway's own CPU is measured.
_IDLE = 20.0
#: Runs ``convoy serve`` with the loop's slow-step threshold (seconds, argv[1]) set first.
#: With a file name in argv[2] (else ""), profiles the whole run into it.
_RUNNER = """
import asyncio, cProfile, signal, sys
# uvicorn raises the SIGTERM it caught again once it has stopped: exit through the finally.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
asyncio.BaseEventLoop.slow_callback_duration = float(sys.argv.pop(1))
out = sys.argv.pop(1)
if sys.argv.pop(1) == "debug":  # asyncio's own loop: uvloop logs no slow steps
    import uvicorn.config
    uvicorn.config.LOOP_FACTORIES["auto"] = uvicorn.config.LOOP_FACTORIES["asyncio"]
    debug = asyncio.BaseEventLoop.set_debug
    asyncio.BaseEventLoop.set_debug = lambda loop, _: debug(loop, True)  # whatever the runner says
from gateway.cli import main
sys.argv[0] = "convoy"
profiler = cProfile.Profile()
if out:
    profiler.enable()
try:
    main()
finally:
    if out:
        profiler.disable()
        profiler.dump_stats(out)
"""


async def _until(client: httpx.AsyncClient, url: str, within: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            response = await client.get(url)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(url)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _ids(client: httpx.AsyncClient, base: str, count: int) -> list[str]:
    """Every conversation's id, once the gateway lists ``count`` of them (adopted at start)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "100", **({"page_id": cursor} if cursor else {})}
            page = (await client.get(f"{base}/conversation", params=params)).json()
            ids += [item["id"] for item in page["results"]]
            cursor = page.get("next_page_id")
            if not cursor:
                break
        if len(ids) >= count:
            return ids
        await asyncio.sleep(1)
    raise TimeoutError(f"the gateway adopted fewer than {count} conversations")


async def _latencies(client: httpx.AsyncClient, base: str, ids: list[str], seconds: float) -> list[float]:
    took: list[float] = []
    ends = time.monotonic() + seconds
    n = 0
    while time.monotonic() < ends:
        began = time.perf_counter()
        response = await client.get(f"{base}/conversation/{ids[n % len(ids)]}")
        took.append(time.perf_counter() - began)
        response.raise_for_status()
        n += 1
    return took


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one(count: int, seconds: float, profile: Path | None, slow_ms: float | None) -> None:
    install = f"loops-{secrets.token_hex(3)}"
    folder = Path(tempfile.mkdtemp(prefix="convoy-loops-"))
    socket = folder / "engine.sock"
    stub = await asyncio.create_subprocess_exec(
        sys.executable, str(_HERE / "stub_docker.py"), str(socket), install, str(count)
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = os.environ | {
        "DOCKER_HOST": f"unix://{socket}",
        "CONVOY_INSTALL": install,
        "CONVOY_POOL_SIZE": "0",
        "CONVOY_MAX_CONVERSATIONS": str(count + 10),
        "CONVOY_DOCKER_SOCKET_DIR": str(folder / "sockets"),
    }
    argv = ["serve", "--runtime", "docker", "--port", str(port)]
    out = "" if profile is None else str(profile / f"gateway-{count}.prof")
    if slow_ms is not None:
        env["PYTHONASYNCIODEBUG"] = "1"
    threshold = str((slow_ms or 100.0) / 1000)
    runner = folder / "serve.py"
    runner.write_text(_RUNNER)
    mode = "plain" if slow_ms is None else "debug"
    command = [sys.executable, str(runner), threshold, out, mode, *argv]
    gateway = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            await _until(client, f"{base}/health")
            ids = await _ids(client, base, count)
            engine = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)), timeout=10)
            async with engine:
                before = (await engine.get("http://stub/stub/calls")).json()
                took = await _latencies(client, base, ids, seconds)
                after = (await engine.get("http://stub/stub/calls")).json()
            used = cpu_seconds(gateway.pid)
            await asyncio.sleep(_IDLE)  # no request: what the loops alone cost
            idle_cpu = (cpu_seconds(gateway.pid) - used) / _IDLE
        ms = sorted(t * 1000 for t in took)
        p99 = statistics.quantiles(ms, n=100)[98]
        p50 = statistics.median(ms)
        print(
            f"{count:5d} conversations: GET /conversation/{{id}} x{len(ms)}  p50 {p50:6.2f} ms"
            f"  p99 {p99:6.2f} ms  max {ms[-1]:7.2f} ms"
        )
        calls = {k: (after.get(k, 0) - before.get(k, 0)) / seconds for k in after}
        shown = ", ".join(f"{k} {v:.2f}/s" for k, v in sorted(calls.items()) if v and "stub" not in k)
        print(f"{'':18}engine calls: {shown}")
        print(f"{'':18}gateway CPU with no request: {idle_cpu * 100:.1f}% of a core (over {_IDLE:g} s)")
    finally:
        await _stop(gateway)
        stub.terminate()
        await stub.wait()
        await asyncio.to_thread(shutil.rmtree, folder, True)


async def main(counts: list[int], seconds: float, profile: Path | None, slow_ms: float | None) -> None:
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {seconds:g} s of requests per size")
    for count in counts:
        await one(count, seconds, profile, slow_ms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, action="append", help="conversations (repeatable; 500, 2000)")
    parser.add_argument(
        "--seconds", type=float, default=40.0, help="of requests per size (a reconcile is 30 s)"
    )
    parser.add_argument("--profile", type=Path, help="write each gateway's cProfile here")
    parser.add_argument("--slow", type=float, help="log loop steps over this many ms (asyncio debug)")
    arguments = parser.parse_args()
    if arguments.profile is not None:
        arguments.profile = arguments.profile.absolute()
        arguments.profile.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(arguments.count or [500, 2000], arguments.seconds, arguments.profile, arguments.slow))
