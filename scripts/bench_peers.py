"""convoy and SWE-ReX side by side on Docker, in one run, rounds interleaved:

1. create -> ``echo hi`` done: convoy's ``create()`` (from its warm pool) + ``run()``, vs
   SWE-ReX's ``DockerDeployment.start()`` + ``runtime.execute()``;
2. a warm ``echo hi`` in a running sandbox: ``run()`` vs ``execute()`` (median of ``--runs``);
3. teardown: convoy's ``delete()`` vs SWE-ReX's ``stop()``.

Both run ``sh -c "echo hi"`` (SWE-ReX's ``Command(shell=True)``). SWE-ReX lives in a venv of
its own, ``.bench/swerex-venv`` (never the project's), made on demand with pip; its server
runs in a local image, ``convoy-bench/swerex:VERSION``, built from the local Debian base
(``convoy-base:bookworm`` or ``$CONVOY_BASE_IMAGE``; nothing is pulled) with SWE-ReX
installed from the same pip. Without either (no PyPI here, no base image) the bench says
so and skips. SWE-ReX is driven by a child process in its venv, one command per line on
stdin, one JSON answer per line on stdout. Everything it starts carries this run's
``convoy.install`` label and is removed at the end.
Run: ``scripts/bench peers`` (or this file; ``--runs N --rounds N``).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchtools import bench_arguments

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
SWEREX_VERSION = "1.4.0"
SWEREX_VENV = BENCH / "swerex-venv"
SWEREX_IMAGE = f"convoy-bench/swerex:{SWEREX_VERSION}"
BASE_IMAGE = os.environ.get("CONVOY_BASE_IMAGE", "convoy-base:bookworm")
_LAUNCHER = (
    '#!/bin/sh\nPYTHONPATH=/opt/swerex exec python3 -c "from swerex.server import main; main()" "$@"\n'
)
_DOCKERFILE = f"""FROM {BASE_IMAGE}
COPY site /opt/swerex
COPY swerex-remote /usr/local/bin/swerex-remote
RUN chmod 0755 /usr/local/bin/swerex-remote \\
    && PYTHONPATH=/opt/swerex python3 -c "import swerex.server"
"""


# --- SWE-ReX's side: runs in its own venv (only SWE-ReX and the standard library) ---------


async def _swerex_child(image: str, install: str) -> None:
    from swerex.deployment.docker import DockerDeployment
    from swerex.runtime.abstract import Command

    echo = Command(command="echo hi", shell=True)
    deployment: Any = None
    # Answers on a stdout of their own: SWE-ReX logs to fd 1, which now goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def answer(**figures: Any) -> None:
        answers.write(json.dumps(figures) + "\n")
        answers.flush()

    while line := await asyncio.to_thread(sys.stdin.readline):
        op, *args = line.split()
        if op == "start":  # create -> echo hi done
            began = time.perf_counter()
            deployment = DockerDeployment(
                image=image, pull="never", docker_args=["--label", f"convoy.install={install}"]
            )
            await deployment.start()
            result = await deployment.runtime.execute(echo)
            assert result.stdout == "hi\n", result
            answer(seconds=time.perf_counter() - began)
        elif op == "exec":  # warm echo hi, n times
            times = []
            for _ in range(int(args[0])):
                began = time.perf_counter()
                result = await deployment.runtime.execute(echo)
                times.append(time.perf_counter() - began)
                assert result.stdout == "hi\n", result
            answer(times=times)
        elif op == "stop":
            began = time.perf_counter()
            await deployment.stop()
            answer(seconds=time.perf_counter() - began)


# --- set-up: SWE-ReX's venv and image, on demand ------------------------------------------


def _python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _own_env() -> dict[str, str]:
    """The environment for SWE-ReX's venv: without the project's PYTHONPATH."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def ensure_swerex() -> str | None:
    """Why SWE-ReX cannot be measured here (``None``: it can), installing it if need be."""
    python = _python_of(SWEREX_VENV)
    spec = f"swe-rex=={SWEREX_VERSION}"
    if not python.exists() or not (SWEREX_VENV / ".complete").exists():
        print(f"installing {spec} into {SWEREX_VENV} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(SWEREX_VENV)], check=True)
        # Its RemoteRuntime imports aiohttp, which 1.4.0 does not declare.
        packages = [spec, "aiohttp"]
        installing = [str(python), "-m", "pip", "install", "-q", *packages]
        if subprocess.run(installing, env=_own_env()).returncode == 0:
            (SWEREX_VENV / ".complete").touch()
        else:
            subprocess.run(["rm", "-rf", str(SWEREX_VENV)], check=False)
            return f"pip could not install {spec}"
    if subprocess.run(["docker", "image", "inspect", SWEREX_IMAGE], capture_output=True).returncode == 0:
        return None
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        return f"no base image {BASE_IMAGE} (scripts/build-images makes it)"
    context = BENCH / "swerex-image"
    subprocess.run(["rm", "-rf", str(context)], check=True)
    context.mkdir(parents=True)
    # The same Python minor as the base's python3 (3.11): its compiled wheels load there.
    target = ["--target", str(context / "site"), "--python-version", "3.11", "--only-binary=:all:"]
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", *target, spec], env=_own_env())
    if installed.returncode != 0:
        return f"pip could not fetch {spec} for the image"
    (context / "swerex-remote").write_text(_LAUNCHER)
    (context / "Dockerfile").write_text(_DOCKERFILE)
    print(f"building {SWEREX_IMAGE} from {BASE_IMAGE} (once)", flush=True)
    legacy = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode != 0
    env = os.environ | ({"DOCKER_BUILDKIT": "0"} if legacy else {})  # as scripts/build-images does
    if subprocess.run(["docker", "build", "-q", "-t", SWEREX_IMAGE, str(context)], env=env).returncode != 0:
        return f"docker build of {SWEREX_IMAGE} failed"
    return None


class SweRex:
    """The child process that drives SWE-ReX."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, install: str) -> SweRex:
        process = await asyncio.create_subprocess_exec(
            str(_python_of(SWEREX_VENV)), __file__, "--swerex-child", SWEREX_IMAGE, install,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_own_env(),
            stderr=(BENCH / "swerex.log").open("wb"),  # its logs, for when it fails
        )  # fmt: skip
        return cls(process)

    async def ask(self, command: str) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command.encode() + b"\n")
        await self._process.stdin.drain()
        line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the SWE-ReX driver stopped on {command!r}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        await self._process.wait()


# --- convoy's side, and the side-by-side table ---------------------------------------------


def _row(name: str, convoy: list[float], swerex: list[float]) -> str:
    ours, theirs = statistics.median(convoy) * 1000, statistics.median(swerex) * 1000
    return f"  {name:<34}{ours:>10.1f}{theirs:>10.1f}  ms {ours / theirs:>7.2f}x"


async def main(runs: int, rounds: int) -> None:
    import docker_installation as installation
    import httpx
    from bench_pool import POOL_SIZE, pool_ready

    from gateway.client import AsyncConvoyClient

    why = await asyncio.to_thread(ensure_swerex)
    if why is not None:
        print(f"== bench peers skipped: {why}")
        return
    gateway = installation.Gateway(pool_size=POOL_SIZE)
    swerex = await SweRex.start(installation.INSTALL)
    figures: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("create -> echo hi done", "warm echo hi", "teardown")
    }
    async with httpx.AsyncClient(timeout=120) as http:
        try:
            peer = f"SWE-ReX {SWEREX_VERSION} ({SWEREX_IMAGE})"
            print(f"convoy {installation.IMAGE} (pool {POOL_SIZE}); {peer}")
            await gateway.start(http)
            async with AsyncConvoyClient(gateway.base, timeout=120) as client:
                for _ in range(rounds):
                    await pool_ready(http, gateway.base, POOL_SIZE)
                    began = time.perf_counter()
                    convo = await client.create(title="bench")
                    assert (await convo.run("echo hi")).stdout == "hi\n"
                    figures["create -> echo hi done"][0].append(time.perf_counter() - began)
                    figures["create -> echo hi done"][1].append((await swerex.ask("start"))["seconds"])
                    for _ in range(3):  # warm up both
                        await convo.run("echo hi")
                    await swerex.ask("exec 3")
                    for _ in range(max(1, runs // 10)):  # blocks of 10, alternating sides
                        for _ in range(10):
                            began = time.perf_counter()
                            assert (await convo.run("echo hi")).stdout == "hi\n"
                            figures["warm echo hi"][0].append(time.perf_counter() - began)
                        figures["warm echo hi"][1].extend((await swerex.ask("exec 10"))["times"])
                    began = time.perf_counter()
                    await convo.delete()
                    figures["teardown"][0].append(time.perf_counter() - began)
                    figures["teardown"][1].append((await swerex.ask("stop"))["seconds"])
            print(f"medians of {rounds} rounds ({runs} warm commands each side per round):")
            print(f"  {'':<34}{'convoy':>10}{'SWE-ReX':>10}     {'ratio':>7}")
            for name, (ours, theirs) in figures.items():
                print(_row(name, ours, theirs))
        finally:
            await swerex.close()
            await gateway.stop()
            await installation.cleanup()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--swerex-child"]:
        asyncio.run(_swerex_child(sys.argv[2], sys.argv[3]))
        sys.exit(0)
    parser = bench_arguments(__doc__, runs=50, runs_help="warm commands per round and side")
    parser.add_argument("--rounds", type=int, default=5, help="create/teardown rounds per side")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.rounds))
