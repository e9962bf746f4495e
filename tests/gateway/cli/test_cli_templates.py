"""``convoy template build|ls|rm`` and ``convoy create --template``, on the memory runtime's catalogue."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from client_harness import run_cli
from gw_helpers import Harness


async def test_build_ls_use_and_rm_templates(harness: Harness, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "Dockerfile").write_text("FROM debian:bookworm\nCOPY . /src\n")
    (project / "main.c").write_text("int main(void) { return 0; }\n")
    outside = tmp_path / "ci.Dockerfile"
    outside.write_text("FROM project-base\nRUN make\n")
    async with harness.serve() as url:
        built = await run_cli("template", "build", "web", "--from", "node:20", "-d", "Node 20", url=url)
        assert built.code == 0 and built.stdout == "web\n" and "FROM node:20" in built.stderr, built
        from_file = await run_cli("template", "build", "site", "--file", str(project / "Dockerfile"), url=url)
        assert from_file.code == 0 and "COPY . /src" in from_file.stderr, from_file
        elsewhere = await run_cli(
            "template", "build", "ci", "--file", str(outside), "--context", str(project), url=url
        )
        assert elsewhere.code == 0 and "RUN make" in elsewhere.stderr, elsewhere

        listed = await run_cli("--json", "template", "ls", url=url)
        found = {item["name"]: item for item in json.loads(listed.stdout)}
        assert list(found) == ["default", "ci", "site", "web"]
        assert found["web"]["description"] == "Node 20" and found["site"]["built_from"] == "Dockerfile"

        created = await run_cli("create", "--template", "web", url=url)
        assert created.code == 0, created.stderr
        cid = str(uuid.UUID(created.stdout.strip()))
        info = json.loads((await run_cli("--json", "info", cid, url=url)).stdout)
        assert info["template"] == "web"

        ran = await run_cli("run", "--template", "site", "--", "echo", "on site", url=url)
        assert ran.code == 0 and ran.stdout == "on site\n", ran

        refused = await run_cli("template", "rm", "web", url=url)
        assert refused.code == 1 and "in use" in refused.stderr and refused.stdout == ""
        assert (await run_cli("rm", cid, url=url)).code == 0
        removed = await run_cli("template", "rm", "web", "site", url=url)
        assert removed.code == 0 and removed.stdout.split() == ["web", "site"]

        unknown = await run_cli("create", "--template", "web", url=url)
        assert unknown.code != 0 and "known templates: default, ci" in unknown.stderr


async def test_a_build_needs_one_source(harness: Harness, tmp_path: Path) -> None:
    async with harness.serve() as url:
        neither = await run_cli("template", "build", "x", url=url)
        assert neither.code == 2 and "--from" in neither.stderr
        missing = await run_cli("template", "build", "x", "--file", str(tmp_path / "nope"), url=url)
        assert missing.code != 0 and "Traceback" not in missing.stderr
