"""Building the harness swarm of :mod:`scripts.swarm_cluster` (idempotent: what exists is
kept): the bridge and its iptables rule, one network namespace and dockerd per node, the
swarm itself, and the images copied onto every node."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from pathlib import Path

from scripts.swarm_nodes import (
    HEARTBEAT,
    Cluster,
    Node,
    accept_rule,
    answers,
    docker,
    missing_prerequisite,
    sh,
    swarm_state,
)

__all__ = ["load_images", "node_id", "up"]


def up(cluster: Cluster) -> Cluster:
    """Build the cluster (idempotent: what exists is kept). On failure, raises; ``down`` undoes."""
    reason = missing_prerequisite()
    if reason:
        raise RuntimeError(f"cannot build a swarm here: {reason}")
    cluster.base.mkdir(parents=True, exist_ok=True)
    _bridge(cluster)
    _accept_rule(cluster)
    for node in cluster.nodes:
        _namespace(cluster, node)
        _engine(cluster, node)
    for node in cluster.nodes:
        _wait_engine(node)
    _swarm(cluster)
    load_images(cluster)
    (cluster.base / "cluster.json").write_text(json.dumps(cluster.state(), indent=2))
    return cluster


def _bridge(cluster: Cluster) -> None:
    if sh("ip", "link", "show", cluster.bridge, check=False) == "":
        sh("ip", "link", "add", cluster.bridge, "type", "bridge")
    if f"{cluster.host_ip}/" not in sh("ip", "-o", "addr", "show", "dev", cluster.bridge):
        sh("ip", "addr", "add", f"{cluster.host_ip}/24", "dev", cluster.bridge)
    sh("ip", "link", "set", cluster.bridge, "up")


def _accept_rule(cluster: Cluster) -> None:
    rule = accept_rule(cluster)
    if subprocess.run(["iptables", "-C", *rule], capture_output=True, check=False).returncode != 0:
        sh("iptables", "-I", *rule)


def _namespace(cluster: Cluster, node: Node) -> None:
    if node.name not in sh("ip", "netns", "list").split():
        sh("ip", "netns", "add", node.name)
    if sh("ip", "link", "show", node.veth, check=False) == "":
        sh("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.name)
    sh("ip", "link", "set", node.veth, "master", cluster.bridge, "up")
    inside = ("ip", "-n", node.name)
    if f"{node.ip}/" not in sh(*inside, "-o", "addr", "show", "dev", "eth0"):
        sh(*inside, "addr", "add", f"{node.ip}/24", "dev", "eth0")
    sh(*inside, "link", "set", "lo", "up")
    sh(*inside, "link", "set", "eth0", "up")
    # No default route: a node reaches the bridge's subnet only, so nothing it tries
    # beyond (a registry) waits for a timeout.


def _engine(cluster: Cluster, node: Node) -> None:
    root = Path(node.root)
    if answers(node):
        return
    root.mkdir(parents=True, exist_ok=True)
    driver = sh("docker", "info", "--format", "{{.Driver}}", check=False) or "overlay2"
    config = {
        "storage-driver": driver,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
        "iptables": cluster.iptables,
    }
    (root / "daemon.json").write_text(json.dumps(config))
    log = (root / "dockerd.log").open("ab")
    subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{node.name}",
            "dockerd",
            "--config-file",
            str(root / "daemon.json"),
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "x"),
            "--pidfile",
            str(root / "docker.pid"),
            "-H",
            node.host,
            "--bridge",
            "none",
            "--cgroup-parent",
            node.name,
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        # Swarm's executor pulls a task's image before every start unless told to use the local
        # one first; with no registry that pull only fails, after a DNS timeout.
        env=os.environ | {"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
    )


def _wait_engine(node: Node, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not answers(node):
        if time.monotonic() > deadline:
            tail = (Path(node.root) / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{node.name}: dockerd did not answer in {timeout:.0f}s:\n{tail}")
        time.sleep(0.3)


def _swarm(cluster: Cluster) -> None:
    manager = cluster.manager
    if swarm_state(manager) != "active":
        docker(
            manager,
            "swarm",
            "init",
            "--advertise-addr",
            manager.ip,
            "--listen-addr",
            f"{manager.ip}:2377",
            "--dispatcher-heartbeat",
            HEARTBEAT,
            "--default-addr-pool",
            cluster.address_pool,
            "--default-addr-pool-mask-length",
            "24",
        )
    token = docker(manager, "swarm", "join-token", "-q", "worker")
    for node in cluster.nodes[1:]:
        if swarm_state(node) != "active":
            docker(
                node,
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                node.ip,
                "--listen-addr",
                f"{node.ip}:2377",
                f"{manager.ip}:2377",
            )
    deadline = time.monotonic() + 60
    while True:
        ready = docker(manager, "node", "ls", "--format", "{{.Status}}").split()
        if ready.count("Ready") >= cluster.size:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"swarm nodes not ready: {ready}")
        time.sleep(0.5)
    for node in cluster.nodes:  # every node has the same hostname here: the label tells them apart
        docker(manager, "node", "update", "--label-add", f"convoy.harness-node={node.name}", node_id(node))


def node_id(node: Node) -> str:
    """The node's Swarm node ID (asked of its own engine)."""
    return docker(node, "info", "--format", "{{.Swarm.NodeID}}")


def load_images(cluster: Cluster) -> None:
    """Copy each image onto every node that lacks it (one save, parallel loads)."""
    for image in cluster.images:
        wanted = [
            n
            for n in cluster.nodes
            if not docker(n, "image", "inspect", "--format", "{{.Id}}", image, check=False)
        ]
        if not wanted:
            continue
        archive = str(cluster.base / "image.tar")
        sh("docker", "save", "-o", archive, image, timeout=600)
        try:
            with concurrent.futures.ThreadPoolExecutor(len(wanted)) as pool:
                list(pool.map(lambda n, tar=archive: docker(n, "load", "-q", "-i", tar, timeout=600), wanted))
        finally:
            Path(archive).unlink(missing_ok=True)
