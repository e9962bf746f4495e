"""The gateway stack (``deploy/swarm/convoy-stack.yml``) deployed on the session's cluster,
for the tests of two gateways behind one address; removed with all it made at the end.

The stack's gateways run the image ``CONVOY_GATEWAY_IMAGE`` (default
``convoy-gateway:latest``, built by ``scripts/build-images`` from this tree), loaded
onto the manager here when it lacks it. They drive the manager's engine through
its socket (a file on this host: the harness's nodes share its filesystem).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.swarm_cluster import Cluster, docker
from scripts.swarm_up import load_images

STACK_FILE = Path(__file__).parents[3] / "deploy" / "swarm" / "convoy-stack.yml"
GATEWAY_IMAGE = os.environ.get("CONVOY_GATEWAY_IMAGE", "convoy-gateway:latest")
PORTS = {"balancer": 8000, "gateway-a": 8001, "gateway-b": 8002}


@dataclass(frozen=True)
class Stack:
    name: str
    install: str
    admin_key: str
    user_keys: dict[str, str]  # principal -> key
    manager_ip: str

    def url(self, service: str = "balancer") -> str:
        return f"http://{self.manager_ip}:{PORTS[service]}"

    def headers(self, principal: str | None = None) -> dict[str, str]:
        key = self.user_keys[principal] if principal else self.admin_key
        return {"Authorization": f"Bearer {key}"}


def gateway_container(cluster: Cluster, stack: Stack, service: str) -> str:
    """The id of the running container of the stack's ``service`` (all run on the manager)."""
    label = f"com.docker.swarm.service.name={stack.name}_{service}"
    ids = docker(cluster.manager, "ps", "-q", "--filter", f"label={label}").split()
    assert len(ids) == 1, f"{service}: {ids}"
    return ids[0]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_serving(stack: Stack, services: tuple[str, ...] = tuple(PORTS), within: float = 180) -> None:
    deadline = time.monotonic() + within
    while not all(_answers(stack.url(service)) for service in services):
        if time.monotonic() > deadline:
            raise AssertionError(f"stack {stack.name}: {services} not all answering in {within:g}s")
        time.sleep(0.5)


def _stack_gone(cluster: Cluster, stack: str, within: float = 60) -> list[str]:
    """What of the stack is still there after ``stack rm`` (it returns before its tasks end)."""
    deadline = time.monotonic() + within
    while True:
        left = [
            f"{kind} {name}"
            for kind, listing in (
                ("service", ("service", "ls", "--format", "{{.Name}}")),
                ("network", ("network", "ls", "--format", "{{.Name}}")),
                ("container", ("ps", "-a", "--format", "{{.Names}}")),
            )
            for name in docker(cluster.manager, *listing, check=False).split()
            if name.startswith(f"{stack}_")
        ]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _check_image() -> None:
    """The gateway image must carry this tree's swarm runtime and balancer (else the stack's
    gateways never answer, and the test would only time out)."""
    probe = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", GATEWAY_IMAGE, "python3", "-c",
         "import gateway.balancer, gateway.runtimes.swarm"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, (
        f"{GATEWAY_IMAGE} has no swarm runtime or balancer: rebuild it (scripts/build-images): "
        f"{probe.stderr.strip()[-300:]}"
    )


@contextmanager
def deployed(cluster: Cluster, **settings: str) -> Iterator[Stack]:
    """The stack deployed (``settings``: more CONVOY_* variables, by their names without the
    prefix), serving; ``stack rm`` and a check that nothing of it is left on the way out."""
    manager = cluster.manager
    _check_image()
    load_images(dataclasses.replace(cluster, nodes=[manager], images=(GATEWAY_IMAGE,)))
    if not docker(manager, "network", "inspect", "--format", "{{.ID}}", "convoy-swarm", check=False):
        docker(
            manager, "network", "create", "--driver", "overlay", "--attachable",
            "--label", "convoy.shared=true", "convoy-swarm",
        )  # fmt: skip
    stack = Stack(
        name=f"cvops{uuid.uuid4().hex[:6]}",
        install=f"stack-{uuid.uuid4().hex[:8]}",
        admin_key=secrets.token_urlsafe(24),
        user_keys={"bob": secrets.token_urlsafe(24), "carol": secrets.token_urlsafe(24)},
        manager_ip=manager.ip,
    )
    env = os.environ | {
        "CONVOY_GATEWAY_IMAGE": GATEWAY_IMAGE,
        "CONVOY_DOCKER_IMAGE": cluster.images[0],
        "CONVOY_DOCKER_SOCKET": manager.socket,
        "CONVOY_INSTALL": stack.install,
        "CONVOY_ADMIN_KEYS": stack.admin_key,
        "CONVOY_API_KEYS": ",".join(f"{who}:{key}" for who, key in stack.user_keys.items()),
        "CONVOY_PREVIEW_SECRET": secrets.token_urlsafe(32),
        "CONVOY_RECONCILE_INTERVAL": "1",
        "CONVOY_SYNC_INTERVAL": "1",
    }
    env |= {f"CONVOY_{name.upper()}": value for name, value in settings.items()}
    deploy = ["docker", "-H", manager.host, "stack", "deploy", "--resolve-image", "never"]
    try:
        subprocess.run(
            [*deploy, "-c", str(STACK_FILE), stack.name],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_serving(stack)
        yield stack
    finally:
        docker(manager, "stack", "rm", stack.name, check=False)
        left = _stack_gone(cluster, stack.name)
        # The gateways' snapshot volume: stack rm leaves volumes (once its containers are gone).
        docker(manager, "volume", "rm", f"{stack.name}_convoy-snapshots", check=False)
        assert not left, f"stack {stack.name} left {left}"
