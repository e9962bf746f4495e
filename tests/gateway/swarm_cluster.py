"""The test session's Swarm: three engines on this machine, built once, torn down at the end.

Tests marked ``swarm`` use the session fixture ``swarm_cluster`` (registered in
``tests/gateway/conftest.py``): it builds the cluster of
:mod:`scripts.swarm_cluster` the first time a test asks for it (about 30-50 s:
most of it copying the sandbox image onto each node) and removes all of it
when the session ends - also when a test fails, at interpreter exit, and on
SIGTERM/SIGHUP. Where it cannot run (not root, no ``ip``/``nsenter``/
``iptables``/``dockerd``, no Docker engine or sandbox image) the tests are
skipped with the reason (:func:`skip_reason`, applied in ``tests/conftest.py``);
``CONVOY_REQUIRE_SWARM=1`` makes that an error, as ``CONVOY_REQUIRE_DOCKER``
does for Docker. ``CONVOY_SWARM_PREFIX`` (default ``cvs``) names everything
the cluster makes, so two sessions on one machine can each have their own.
``CONVOY_SWARM_KEEP=1`` (for working on the runtime): reuse the cluster
``scripts/swarm-cluster up`` built (or build it) and leave it up at the end.

The API tests build on (all from :class:`scripts.swarm_cluster.Cluster`):

- ``cluster.manager.host``: the ``DOCKER_HOST`` of the manager (node 1);
- ``cluster.nodes[k].host`` / ``.ip`` / ``.name``: each node's engine socket
  (``unix://...``), its address on the harness bridge (``10.199.0.1K``, which
  the host reaches) and its name (netns, cgroup parent and the Swarm node label
  ``convoy.harness-node``); ``node_id(node)`` its Swarm node ID;
- ``cut(cluster, k)`` / ``restore(cluster, k)``: take node k off the bridge
  (``ip link set PREFIXvK down``) and back; its engine keeps running;
- ``swarm_settings(cluster, state_dir, **overrides)``: gateway settings for the swarm
  runtime on it (a fresh installation name, reach ``published``: tests run on the host);
- ``node_of(cluster, install, conversation_id)``: the harness node running a
  conversation's sandbox task, and ``kill_sandbox_task(...)`` kills its container there;
- ``leftovers(cluster)``: what any node still holds (services, containers,
  non-default networks, volumes, configs, secrets), for "nothing left" checks.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import UUID

import pytest

from gateway.runtimes.swarm_config import Names
from gateway.settings import Settings
from scripts.swarm_cluster import (
    Cluster,
    Node,
    cut,
    default_images,
    docker,
    down,
    missing_prerequisite,
    node_id,
    restore,
    up,
)

__all__ = [
    "Cluster",
    "cut",
    "docker",
    "kill_sandbox_task",
    "leftovers",
    "node_id",
    "node_of",
    "restore",
    "skip_reason",
    "swarm_cluster",
    "swarm_settings",
]

#: Every engine's own networks, and the swarm runtime's shared overlay (the default
#: ``swarm_network``: installation-wide, like the Docker runtime's ``docker_network``).
_DEFAULT_NETWORKS = {"bridge", "host", "none", "ingress", "docker_gwbridge", "convoy-swarm"}
_lock = threading.Lock()
_built: list[Cluster] = []


def skip_reason() -> str | None:
    """Why the swarm tests cannot run here, or None."""
    reason = missing_prerequisite()
    if reason:
        return f"no swarm harness: {reason}"
    images = default_images()
    for image in images[:1]:
        found = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, timeout=15, check=False
        )
        if found.returncode != 0:
            return f"no swarm harness: image {image} missing (scripts/build-images)"
    return None


def _teardown() -> None:
    with _lock:
        while _built:
            problems = down(_built.pop())
            if problems:
                print("swarm harness teardown: " + "; ".join(problems), file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _teardown()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@pytest.fixture(scope="session")
def swarm_cluster() -> Iterator[Cluster]:
    """The session's three-node Swarm (built on first use; gone at the end, whatever happened)."""
    reason = skip_reason()
    if reason:
        if os.environ.get("CONVOY_REQUIRE_SWARM") == "1":
            pytest.fail(f"swarm tests required but cannot run: {reason}")
        pytest.skip(reason)
    cluster = Cluster.named(os.environ.get("CONVOY_SWARM_PREFIX", "cvs"), 3, images=default_images())
    with _prefix_held(cluster):
        yield from _session_cluster(cluster)


@contextlib.contextmanager
def _prefix_held(cluster: Cluster) -> Iterator[None]:
    """The prefix for this session alone: another test session (a second pytest on the same
    machine) would otherwise tear down and rebuild the cluster this one is using. Held through
    an exclusive lock on ``/tmp/PREFIX-swarm.lock``, released by the kernel when the session ends."""
    path = cluster.base.with_name(cluster.base.name + ".lock")
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = (
                f"the swarm prefix {cluster.prefix!r} is in use by another test session "
                "(set CONVOY_SWARM_PREFIX and CONVOY_SWARM_SUBNET to run beside it)"
            )
            if os.environ.get("CONVOY_REQUIRE_SWARM") == "1":
                pytest.fail(message)
            pytest.skip(message)
        yield


def _session_cluster(cluster: Cluster) -> Iterator[Cluster]:
    if os.environ.get("CONVOY_SWARM_KEEP") == "1":  # reuse (or build) one that outlives the session
        up(cluster)
        yield cluster
        return
    down(cluster)  # whatever an earlier, killed session left under this prefix
    with _lock:
        _built.append(cluster)
    atexit.register(_teardown)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signum, _on_signal)
    try:
        up(cluster)
        yield cluster
    finally:
        _teardown()


def leftovers(cluster: Cluster) -> dict[str, list[str]]:
    """Per node, everything that is not part of an empty swarm: ``{}`` when clean."""
    found: dict[str, list[str]] = {}
    manager = cluster.manager
    for kind in ("service", "config", "secret"):
        names = docker(manager, kind, "ls", "--format", "{{.Name}}", check=False).split()
        if names:
            found[f"{kind}s"] = names
    for node in cluster.nodes:
        things = docker(node, "ps", "-a", "--format", "container {{.Names}}", check=False).splitlines()
        things += [f"volume {name}" for name in docker(node, "volume", "ls", "-q", check=False).split()]
        things += [
            f"network {name}"
            for name in docker(node, "network", "ls", "--format", "{{.Name}}", check=False).split()
            if name not in _DEFAULT_NETWORKS
        ]
        if things:
            found[node.name] = things
    return found


def swarm_settings(cluster: Cluster, state_dir: Path, **overrides: Any) -> Settings:
    """Settings of a gateway on the cluster's manager, with an installation of its own."""
    values: dict[str, Any] = {
        "install": f"test-{uuid.uuid4().hex[:8]}",
        "runtime": "swarm",
        "docker_url": cluster.manager.host,
        "docker_image": cluster.images[0],
        "swarm_reach": "published",
        "start_timeout": 120.0,
        "state_dir": state_dir,
        "pool_size": 0,
    }
    return Settings(**(values | overrides))


def _task_of(cluster: Cluster, install: str, conversation_id: UUID) -> tuple[str, str]:
    """(node id, container id) of the conversation's sandbox task."""
    service = Names.of(install, conversation_id).sandbox
    task = docker(cluster.manager, "service", "ps", "-q", "--no-trunc", service).split()[0]
    found = docker(
        cluster.manager, "inspect", "--format", "{{.NodeID}} {{.Status.ContainerStatus.ContainerID}}", task
    ).split()
    return found[0], found[1] if len(found) > 1 else ""


def node_of(cluster: Cluster, install: str, conversation_id: UUID) -> Node:
    """The harness node whose engine runs the conversation's sandbox."""
    wanted, _ = _task_of(cluster, install, conversation_id)
    return next(node for node in cluster.nodes if node_id(node) == wanted)


def kill_sandbox_task(cluster: Cluster, install: str, conversation_id: UUID) -> None:
    """SIGKILL the sandbox's container on its node (its agent ends behind the runtime's back)."""
    wanted, container = _task_of(cluster, install, conversation_id)
    node = next(node for node in cluster.nodes if node_id(node) == wanted)
    docker(node, "kill", container)


def sandbox_processes(cluster: Cluster, install: str, conversation_id: UUID) -> list[tuple[str, str]]:
    """(command name, state letter) of every process the agent of the conversation's sandbox
    started (its descendants), read from /proc inside its container on its node (blocking).
    The agent is init's child; what ``docker exec`` runs has no parent in the container."""
    wanted, container = _task_of(cluster, install, conversation_id)
    node = next(node for node in cluster.nodes if node_id(node) == wanted)
    stats = docker(node, "exec", container, "sh", "-c", "cat /proc/[0-9]*/stat", check=False)
    table: dict[int, tuple[str, str, int]] = {}
    for line in stats.splitlines():
        if "(" in line and ")" in line:
            fields = line[line.rindex(")") + 2 :].split()
            table[int(line.split()[0])] = (
                line[line.index("(") + 1 : line.rindex(")")],
                fields[0],
                int(fields[1]),
            )
    family = {pid for pid, (_, _, ppid) in table.items() if ppid == 1}
    while True:
        more = {pid for pid, (_, _, ppid) in table.items() if ppid in family} - family
        if not more:
            break
        family |= more
    agents = {pid for pid, (_, _, ppid) in table.items() if ppid == 1}
    return [(table[pid][0], table[pid][1]) for pid in sorted(family - agents)]
