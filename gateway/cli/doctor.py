"""``convoy doctor``: an isolation self-test of this host's Docker, run before trusting it.

One line per check (``PASS``/``FAIL`` name: why), or ``--json``; the exit status is 0
only when every check passes. The checks are :mod:`gateway.doctor`'s; the settings are
the gateway's own (``CONVOY_*``: engine URL, sandbox image, reach), so it tests what a
gateway started here would do.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from gateway.cli._state import run_async, settings_from, state


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    ctx: typer.Context,
    image: Annotated[
        str | None, typer.Option(help="Sandbox image to test (default: CONVOY_DOCKER_IMAGE).")
    ] = None,
    docker_url: Annotated[
        str | None, typer.Option(help="Engine URL (default: CONVOY_DOCKER_URL, DOCKER_HOST, the socket).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Check that sandboxes started here are isolated: non-root, no capabilities, read-only,
    limited, cut off from the host, the gateway, each other, the metadata address, the
    internet and the Docker socket. Starts two short-lived sandboxes and removes them."""
    settings = settings_from(runtime="docker", docker_image=image, docker_url=docker_url)
    as_json = json_output or state(ctx).json

    async def run() -> int:
        from gateway.doctor import run_checks

        install, checks = await run_checks(settings)
        ok = all(check.ok for check in checks)
        if as_json:
            document = {"ok": ok, "install": install, "checks": [check.as_dict() for check in checks]}
            print(json.dumps(document, indent=2))
        else:
            for check in checks:
                print(check.line())
            print(f"{'all' if ok else 'NOT all'} {len(checks)} checks passed", file=sys.stderr)
        return 0 if ok else 1

    run_async(run)
