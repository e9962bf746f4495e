"""Templates on Docker: images with no Python and no libc run the mounted agent, with every guarantee.

The images come from Debian packages (``template_images``: busybox-static alone,
and with musl) and from Dockerfiles built through the gateway; all of it is
removed at the end (the session fixture checks containers, volumes, networks;
this module's fixture the images).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from dockertools import adocker, alabelled, create, docker, inspect
from template_gateway import Gateway

from gateway.app import create_app
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker import DockerRuntime
from gateway.settings import Settings
from scripts import template_images
from tests.helpers import eventually, tar_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def images(docker_install: str) -> Iterator[dict[str, str]]:
    """The busybox and musl images of this session; at the end, they and the templates are removed."""
    made = {
        kind: template_images.build(kind, f"convoy-test-{kind}:{docker_install}")
        for kind in ("busybox", "musl")
    }
    yield made
    templates = docker("images", "-q", "--filter", f"label=convoy.install={docker_install}").split()
    docker("rmi", "-f", *made.values(), *templates, check=False)


@pytest.fixture
async def gateway(
    serve: Any, docker_settings: Settings, docker_runtime: DockerRuntime
) -> AsyncIterator[Gateway]:
    app = create_app(docker_settings, runtime=docker_runtime)
    async with serve(app) as base, httpx.AsyncClient(timeout=120) as client:
        yield Gateway(client, base, docker_runtime)


async def test_a_busybox_only_template_runs_tasks_moves_files_streams_and_cancels(
    gateway: Gateway, images: dict[str, str]
) -> None:
    lines = await gateway.build("bb", **{"from": images["busybox"]})
    assert lines[-1]["type"] == "done" and lines[-1]["template"]["built_from"] == images["busybox"]
    assert "bb" in [
        t["name"] for t in (await gateway.client.get(f"{gateway.base}/template")).json()["results"]
    ]
    conversation = await create(gateway.client, gateway.base, template="bb")
    assert (await gateway.client.get(f"{gateway.base}/conversation/{conversation}")).json()[
        "template"
    ] == "bb"
    agent = gateway.agent(conversation)
    assert (await agent.get("/agent-info")).json()["template"] == "bb"

    # The image's own tools and environment; not root; no capability; read-only root; no token.
    task, out = await agent.shell(
        "busybox | head -n 1; id -u; id -g; echo PATH=$PATH; env; "
        "grep -E '^(Uid|Gid|CapPrm|CapEff)' /proc/self/status; "
        "touch /etc/x 2>&1; cat /data/agent/token 2>&1; echo HOME=$HOME"
    )
    assert task["status"] == "COMPLETED", (task, out)
    assert out.startswith("BusyBox v1.35"), out
    assert "\n10001\n10001\n" in out
    assert "PATH=/bin:/usr/bin:/sbin:/usr/sbin\n" in out
    assert "PYTHON" not in out and "/opt/convoy" not in out and "LD_" not in out
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out
    # Every uid and gid the user's (the bundle's helper set them all; none is left root).
    assert "Uid:\t10001\t10001\t10001\t10001\n" in out and "Gid:\t10001\t10001\t10001\t10001\n" in out
    assert "Read-only file system" in out and "Permission denied" in out and "HOME=/tmp" in out

    # The same hardening as the default sandbox's, and the agent's bundle read-only.
    sandbox = await inspect("container", cfg.Names.of(gateway.runtime._install, UUID(conversation)).sandbox)
    host = sandbox["HostConfig"]
    assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["Memory"] and host["PidsLimit"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["Init"]
    bundle = next(m for m in sandbox["Mounts"] if m["Destination"] == "/opt/convoy")
    assert bundle["RW"] is False
    _, out = await agent.shell("wget -q -T 3 -O- http://1.1.1.1/ 2>&1; echo rc=$?")
    assert "rc=0" not in out, out  # no route out

    # Files in and out of the workspace.
    uploaded = await agent.client.post(
        f"{agent.base_url}/upload/in",
        files={"files": ("data.txt", b"from the client\n")},
        headers=agent.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    task, out = await agent.shell("cat in/data.txt; echo made by busybox > out.txt; ls -ln out.txt")
    assert "from the client" in out and " 10001 " in out, out
    download = await agent.get("/file-content/out.txt")
    assert download.status_code == 200 and download.text == "made by busybox\n"

    # Output streams while the task runs (it waits for a file the client makes after reading it).
    waiting = await agent.start_task(
        {"type": "Shell", "command": "echo first; while [ ! -e go ]; do sleep 0.1; done; echo second"}
    )

    async def first_seen() -> bool:
        return "first" in await agent.output(waiting["id"])

    await eventually(first_seen, what="the first line streamed")
    assert (await agent.get(f"/task/{waiting['id']}")).json()["status"] == "RUNNING"
    made = await agent.client.post(f"{agent.base_url}/file/go", headers=agent.headers)
    assert made.status_code in (200, 201), made.text
    done = await agent.wait_task(waiting["id"])
    assert done["status"] == "COMPLETED" and await agent.output(waiting["id"]) == "first\nsecond\n"

    # Cancelling ends the task's whole group.
    sleeper = await agent.start_task({"type": "Shell", "command": "sleep 300 & echo started; sleep 301"})

    async def started() -> bool:
        return "started" in await agent.output(sleeper["id"])

    # Once started: a cancel in the first milliseconds of a shell can miss the child it is
    # forking (on every template, the default one included: not what this test is about).
    await eventually(started, what="the sleeper started")
    cancelled = await agent.client.delete(f"{agent.base_url}/task/{sleeper['id']}", headers=agent.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (await agent.wait_task(sleeper["id"]))["status"] == "CANCELLED"
    _, out = await agent.shell(["ps", "-o", "args"])
    assert "sleep 30" not in out, out

    # No Python in the image: a Python task says so; argv lists run without a shell.
    task, _ = await agent.run({"type": "Python", "code": "print(1)"})
    assert task["status"] == "ERROR" and task["exit_code"] == 127 and "python3" in task["error"]


async def test_a_dockerfile_template_has_its_content_and_no_shell_fails_clearly(
    gateway: Gateway, images: dict[str, str]
) -> None:
    context = tar_of(
        {
            "Dockerfile": f"FROM {images['busybox']}\nCOPY hello.txt /etc/hello.txt\n"
            'RUN ["/bin/busybox", "rm", "/bin/sh"]\n',
            "hello.txt": "hello from the Dockerfile\n",
        }
    )
    lines = await gateway.build("nosh", dockerfile="Dockerfile", content=context)
    assert any("COPY hello.txt" in line.get("line", "") for line in lines), lines
    conversation = await create(gateway.client, gateway.base, template="nosh")
    agent = gateway.agent(conversation)
    task, out = await agent.shell(["cat", "/etc/hello.txt"])
    assert task["status"] == "COMPLETED" and out == "hello from the Dockerfile\n"
    task, _ = await agent.shell("echo needs a shell")
    assert task["status"] == "ERROR" and task["exit_code"] == 127 and "/bin/sh" in task["error"], task


async def test_a_debian_template_whose_python_is_not_the_agents_still_works(
    gateway: Gateway, docker_settings: Settings, images: dict[str, str]
) -> None:
    fake = '#!/bin/sh\\necho this is not python: "$@"\\n'
    context = tar_of(
        {
            "Dockerfile": f"FROM {docker_settings.docker_image}\nUSER root\n"
            "RUN rm -f /usr/bin/python3* /usr/local/bin/python3* "
            f"&& printf '{fake}' > /usr/bin/python3 && chmod 755 /usr/bin/python3\n"
            "ENV PYTHONHOME=/nowhere PYTHONPATH=/nowhere\n",
        }
    )
    await gateway.build("fakepy", dockerfile="Dockerfile", content=context)
    conversation = await create(gateway.client, gateway.base, template="fakepy")
    agent = gateway.agent(conversation)
    task, out = await agent.run({"type": "Python", "code": "print(1)"})
    assert task["status"] == "COMPLETED" and out == "this is not python: -u -\n", (task, out)
    _, out = await agent.shell("id -u; echo $PYTHONHOME")
    assert out == "10001\n/nowhere\n"  # the image's environment is the tasks'

    # musl: the agent brings its own loader and libc; the image's are musl's.
    await gateway.build("musl", **{"from": images["musl"]})
    musl = gateway.agent(await create(gateway.client, gateway.base, template="musl"))
    task, out = await musl.shell("ls /lib/ld-musl-x86_64.so.1 /lib64 2>&1; id -u")
    assert "/lib/ld-musl-x86_64.so.1" in out and "No such file" in out and out.endswith("10001\n"), out


async def test_unknown_templates_removal_in_use_and_nothing_left(
    gateway: Gateway, images: dict[str, str], docker_install: str
) -> None:
    unknown = await gateway.client.post(f"{gateway.base}/conversation", json={"template": "nope"})
    assert unknown.status_code == 422 and "default" in unknown.json()["detail"]
    not_local = await gateway.client.post(
        f"{gateway.base}/template", params={"name": "x", "from": "convoy-no-such-image:never"}
    )
    assert not_local.status_code == 422 and "not a local image" in not_local.json()["detail"]

    await gateway.build("gone", **{"from": images["busybox"]})
    conversation = await create(gateway.client, gateway.base, template="gone")
    refused = await gateway.client.delete(f"{gateway.base}/template/gone")
    assert refused.status_code == 409 and "in use" in refused.json()["detail"]

    # Removed behind convoy's back: the running conversation keeps its image.
    gone_id = (await adocker("images", "-q", f"convoy-template/gone:{docker_install}")).strip()
    await adocker("rmi", "-f", f"convoy-template/gone:{docker_install}")
    names = [t["name"] for t in (await gateway.client.get(f"{gateway.base}/template")).json()["results"]]
    assert "gone" not in names
    task, out = await gateway.agent(conversation).shell("echo still here")
    assert task["status"] == "COMPLETED" and out == "still here\n"

    await gateway.build("short", **{"from": images["busybox"]})
    assert (await gateway.client.delete(f"{gateway.base}/template/short")).status_code == 204
    assert (await gateway.client.delete(f"{gateway.base}/template/short")).status_code == 404
    assert (await gateway.client.delete(f"{gateway.base}/conversation/{conversation}")).status_code == 204
    await gateway.runtime.removals_done()  # the 204 comes once the sandbox is stopped; the rest follows
    assert not any((await alabelled(f"convoy.conversation-id={conversation}")).values())
    # The image it left untagged goes with the next clean-up, once nothing uses it (and it is
    # older than orphan_age: a build's intermediate images are dangling too).
    gateway.runtime.orphan_age = 0.0
    assert await gateway.runtime.cleanup_orphans() >= 1
    for name in ("gone", "short"):
        assert not (await adocker("images", "-q", f"convoy-template/{name}:{docker_install}")).strip()
    dangling = await adocker(
        "images", "-q", "--filter", f"label=convoy.install={docker_install}", "--filter", "dangling=true"
    )
    assert not dangling.strip(), dangling
    assert gone_id and gone_id not in await adocker("images", "-q", "--all")
