"""Lifecycle benchmark on the Docker runtime: how long start, pause, resume (and the first
request after it), snapshot, a fork's start and a start from a snapshot take, at the median
of a few rounds. Everything carries an installation name of its own and is removed at the end.

    PYTHONPATH=. python scripts/bench_lifecycle.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from uuid import uuid4

import httpx

from gateway.runtimes.base import SandboxSpec, SnapshotInfo, WorkspaceSeed
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings

T = TypeVar("T")
IMAGE = os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")


def _spec(seed: WorkspaceSeed | None = None) -> SandboxSpec:
    return SandboxSpec(uuid4(), "bench", "bench", secrets.token_urlsafe(24), datetime.now(UTC), seed=seed)


async def _timed(samples: dict[str, list[float]], name: str, call: Awaitable[T]) -> T:
    began = time.perf_counter()
    result = await call
    samples.setdefault(name, []).append(time.perf_counter() - began)
    return result


async def _round(runtime: DockerRuntime, samples: dict[str, list[float]], http: httpx.AsyncClient) -> None:
    spec = _spec()
    handle = await _timed(samples, "start", runtime.start(spec))
    made = [spec]
    try:
        await _timed(samples, "pause", runtime.pause(spec.conversation_id))
        await _timed(samples, "resume", runtime.resume(spec.conversation_id))
        await runtime.pause(spec.conversation_id)
        began = time.perf_counter()
        await runtime.resume(spec.conversation_id)
        (await http.get(f"{handle.base_url}/ready")).raise_for_status()
        samples.setdefault("resume + first request", []).append(time.perf_counter() - began)
        info = SnapshotInfo(uuid4(), "bench", "bench", datetime.now(UTC), 0, spec.conversation_id)
        snapshot = await _timed(samples, "snapshot", runtime.snapshot(spec.conversation_id, info))
        try:
            fork = _spec(WorkspaceSeed(conversation_id=spec.conversation_id))
            made.append(fork)
            await _timed(samples, "start of a fork", runtime.start(fork))
            seeded = _spec(WorkspaceSeed(snapshot_id=snapshot.id))
            made.append(seeded)
            await _timed(samples, "start from a snapshot", runtime.start(seeded))
        finally:
            await runtime.remove_snapshot(snapshot.id)
    finally:
        for each in made:
            await runtime.remove(each.conversation_id)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(
            install=f"bench-{secrets.token_hex(4)}",
            runtime="docker",
            docker_image=IMAGE,
            docker_reach="published",
            state_dir=Path(state),
        )
        runtime = await DockerRuntime.connect(settings)
        samples: dict[str, list[float]] = {}
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(rounds):
                    await _round(runtime, samples, http)
        finally:
            await runtime.close()
    for name, values in samples.items():
        each = ", ".join(f"{value * 1000:.0f}" for value in values)
        print(f"{name:24s} median {statistics.median(values) * 1000:7.0f} ms   ({each})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args().rounds))
