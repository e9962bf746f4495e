"""Templates benchmark: a busybox-only template (no Python, no libc: the agent is the mounted
bundle, started through its own loader) beside the default sandbox image, side by side:

1. cold start: POST /conversation -> READY through a real gateway (``convoy serve``), median of
   ``--runs`` on each, and the floor of each: ``docker run`` of the image, the agent started the
   same way (the bundle mounted read-only for the busybox one), until /health answers;
2. the idle memory of one conversation of each, as the engine reports it.

The busybox image is built from Debian's busybox-static (scripts/template_images.py). Everything
it starts carries an installation name of its own and is removed at the end, the template too.
"""

from __future__ import annotations

import asyncio
import statistics

import httpx
import template_images
from benchtools import bench_arguments
from docker_installation import IMAGE, INSTALL, Gateway, cleanup, run_until_healthy, sh
from docker_memory import idle_memory

from gateway.runtimes.docker import AiodockerEngine
from gateway.runtimes.docker_bundle import BUNDLE_DIR, agent_argv, bundle_volume_name

TEMPLATE = "bench-busybox"


async def floor_once(client: httpx.AsyncClient, image: str, bundle: str | None) -> float:
    """``docker run`` of ``image`` with the agent as a sandbox starts it, until /health answers."""
    entrypoint, command = agent_argv(["--host", "0.0.0.0", "--port", "8080", "--unprotected"])
    mount = ["-v", f"{bundle}:{BUNDLE_DIR}:ro,nocopy"] if bundle else []
    sandbox_like = ["--read-only", "--tmpfs", "/tmp", "-w", "/tmp", *mount]
    return await run_until_healthy(client, *sandbox_like, "--entrypoint", entrypoint[0], image, *command)


async def main(runs: int) -> None:
    busybox = template_images.build("busybox", f"convoy-bench-busybox:{INSTALL}")
    engine = await AiodockerEngine.open(None)
    gateway = Gateway()
    async with httpx.AsyncClient(timeout=300) as client:
        try:
            await gateway.start(client)
            built = await client.post(f"{gateway.base}/template", params={"name": TEMPLATE, "from": busybox})
            built.raise_for_status()
            image = await engine.image(IMAGE)
            bundle = bundle_volume_name(str((image or {})["Id"]))
            print(f"image {IMAGE} beside {busybox} ({TEMPLATE}), install {INSTALL}")
            rows: dict[str, tuple[float, float, str]] = {}
            for label, template, floor_image, floor_bundle in (
                ("default", None, IMAGE, None),
                ("busybox", TEMPLATE, busybox, bundle),
            ):
                ids, starts, floors = [], [], []
                await gateway.create(client, template=template)  # the page cache, the bundle's volume
                for _ in range(runs):
                    floors.append(await floor_once(client, floor_image, floor_bundle))
                    conversation_id, took = await gateway.create(client, template=template)
                    starts.append(took)
                    ids.append(conversation_id)
                await asyncio.sleep(5)  # let the agents settle to idle
                memory = await idle_memory(engine, ids[0])
                rows[label] = (statistics.median(floors), statistics.median(starts), memory)
                for conversation_id in ids:
                    await client.delete(f"{gateway.base}/conversation/{conversation_id}")
            for label, (floor, start, memory) in rows.items():
                print(
                    f"{label:<8} cold start, median of {runs}: docker run -> /health {floor * 1000:6.0f} ms, "
                    f"create -> READY {start * 1000:6.0f} ms ({start / floor:.2f}x)"
                )
                print(f"{label:<8} idle memory: {memory}")
        finally:
            await gateway.stop()
            await engine.close()
            await cleanup()
            await sh("docker", "rmi", "-f", busybox, f"convoy-template/{TEMPLATE}:{INSTALL}")


if __name__ == "__main__":
    parser = bench_arguments(__doc__, runs=5, runs_help="cold starts measured on each side")
    asyncio.run(main(parser.parse_args().runs))
