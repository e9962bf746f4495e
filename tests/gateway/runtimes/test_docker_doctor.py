"""``convoy doctor`` on this machine's engine: every check passes on the real setup, the
JSON parses, the exit status says so; a weak setup fails the checks it weakens."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from dockertools import alabelled

from gateway.doctor import CHECKS

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[3]
SANDBOX_IMAGE = os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")


async def doctor(*args: str, **env: str) -> tuple[int, str, str]:
    """Run ``convoy doctor ARGS`` in a process of its own with the gateway's settings in ``env``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CONVOY_")} | {
        "PYTHONPATH": str(ROOT),
        "CONVOY_DOCKER_IMAGE": SANDBOX_IMAGE,
        "CONVOY_DOCKER_REACH": "published",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from gateway.cli import main; main()",
        "doctor",
        *args,
        env=environment | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 600)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in document["checks"]}


async def test_doctor_passes_every_check_here_and_leaves_nothing() -> None:
    code, out, err = await doctor("--json")
    document = json.loads(out)
    checks = by_name(document)
    assert list(checks) == [*CHECKS, "cleanup"], out
    failed = {name: check["detail"] for name, check in checks.items() if not check["ok"]}
    assert failed == {}, out
    assert document["ok"] is True and code == 0, (code, err)
    assert "PidsLimit 64" in checks["pids-limit"]["detail"]
    assert "169.254.169.254:80" in checks["no-metadata"]["detail"]
    left = await alabelled(f"convoy.install={document['install']}")
    assert not any(left.values()), left


async def test_a_missing_image_fails_with_one_line_per_check() -> None:
    code, out, _ = await doctor(CONVOY_DOCKER_IMAGE=f"convoy-sandbox:missing-{uuid4().hex[:8]}")
    lines = out.splitlines()
    assert code == 1
    assert [line.split(":")[0] for line in lines] == [
        "PASS engine",
        "FAIL image",
        *(f"FAIL {name}" for name in CHECKS[2:]),
        "PASS cleanup",
    ], out
    assert "is missing" in lines[1] and "not run" in lines[2], out


async def test_a_weak_setup_fails_the_checks_it_weakens() -> None:
    code, out, _ = await doctor(
        "--json", CONVOY_DOCKER_READ_ONLY="false", CONVOY_DOCKER_DROP_CAPABILITIES="0"
    )
    checks = by_name(json.loads(out))
    failed = {name for name, check in checks.items() if not check["ok"]}
    assert failed == {"read-only-root", "non-root"}, out
    assert "ReadonlyRootfs False" in checks["read-only-root"]["detail"]
    assert code == 1


async def test_no_engine_fails_every_check_and_says_why(tmp_path: Path) -> None:
    code, out, _ = await doctor("--json", CONVOY_DOCKER_URL=f"unix://{tmp_path}/no-engine.sock")
    checks = by_name(json.loads(out))
    assert code == 1 and not checks["engine"]["ok"], out
    assert "does not answer" in checks["engine"]["detail"], out
    assert all(not checks[name]["ok"] and "not run" in checks[name]["detail"] for name in CHECKS[1:]), out
