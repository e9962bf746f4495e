"""A real Docker Swarm of N engines on one machine, one network namespace per node.

Used by ``scripts/swarm-cluster up|down|status|cut|restore`` and by the tests'
session fixture (``tests/gateway/swarm_cluster.py``). Everything it makes is
named after one prefix (default ``cvs``), so ``down`` finds it all again, even
after a half-failed ``up`` or in another process:

- a Linux bridge ``PREFIXbr`` with the host's address ``SUBNET.1/24`` (``--subnet``;
  by default ``10.199.0`` for the prefix ``cvs`` and a /24 of ``10.214.0.0/16`` chosen
  by the prefix for any other, so two clusters side by side never share addresses);
- per node K (1..N): a network namespace ``PREFIXnK``, a veth pair ``PREFIXvK``
  (host side, on the bridge) / ``eth0`` (inside, ``SUBNET.1K``), and a dockerd
  started with ``nsenter --net`` (not ``ip netns exec``: that remounts /sys and
  dockerd then finds no cgroups), its own ``--config-file`` (the machine's
  daemon.json sets a data-root), data/exec roots and socket under
  ``/tmp/PREFIX-swarm/nK/``, ``--bridge none`` and ``--cgroup-parent PREFIXnK``;
- one iptables rule (comment ``PREFIX-swarm``) accepting bridge-to-bridge
  traffic in DOCKER-USER (FORWARD where Docker made no DOCKER-USER).

Node 1 is the manager (``swarm init`` advertising its bridge address, with a
short dispatcher heartbeat so a lost node is marked down within seconds); the
others join as workers. The images named are copied onto every node
(``docker save | docker -H NODE load``): there is no registry.

iptables inside the nodes: on by default. Each node has its own netns and so its
own tables (the host's are untouched). Measured here: with ``--iptables=false``
overlays work across nodes by task address and ``mode=host`` published ports
answer on the node's address, but Docker's embedded DNS (127.0.0.11, reached
through a NAT rule in each container) does not; with iptables on, DNS works
(``tasks.SERVICE``). Service VIPs and the routing mesh fail either way: this
kernel has no IPVS (services use ``--endpoint-mode dnsrr``). ``--no-iptables``
builds the other variant.

Cutting a node off (for node-loss tests): ``ip link set PREFIXvK down`` on the
host (``cut``), ``up`` again (``restore``): the node's engine keeps running but
neither the manager nor the host reaches it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripts.swarm_nodes import (
    ADDRESS_POOL,
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
from scripts.swarm_teardown import down

__all__ = [
    "Cluster",
    "Node",
    "cut",
    "default_images",
    "docker",
    "down",
    "missing_prerequisite",
    "node_id",
    "restore",
    "status",
    "up",
]


# ---- up ---------------------------------------------------------------------------------------


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
    _load_images(cluster)
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


def _load_images(cluster: Cluster) -> None:
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


# ---- status, cut, restore ---------------------------------------------------------------------


def status(cluster: Cluster) -> dict[str, object]:
    """What exists now: per node whether its engine answers and its swarm state; the node list."""
    state = cluster.state()
    nodes = []
    for node in cluster.nodes:
        up_now = answers(node)
        nodes.append(
            {
                "name": node.name,
                "ip": node.ip,
                "host": node.host,
                "answers": up_now,
                "swarm": swarm_state(node) if up_now else None,
                "link": "down" if "state DOWN" in sh("ip", "link", "show", node.veth, check=False) else "up",
            }
        )
    state["nodes"] = nodes
    if answers(cluster.manager):
        state["swarm_nodes"] = docker(
            cluster.manager,
            "node",
            "ls",
            "--format",
            "{{.Hostname}} {{.Status}} {{.Availability}}",
            check=False,
        ).splitlines()
    return state


def cut(cluster: Cluster, index: int) -> None:
    """Cut node ``index`` off the bridge (its engine keeps running, unreachable)."""
    sh("ip", "link", "set", cluster.nodes[index - 1].veth, "down")


def restore(cluster: Cluster, index: int) -> None:
    sh("ip", "link", "set", cluster.nodes[index - 1].veth, "up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarm-cluster", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down", "status", "cut", "restore"])
    parser.add_argument("node", nargs="?", type=int, help="for cut/restore: the node's index (1..N)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--prefix", default="cvs")
    parser.add_argument(
        "--subnet",
        help="the bridge's /24 as three octets (default: $CONVOY_SWARM_SUBNET, else by the prefix)",
    )
    parser.add_argument("--address-pool", default=ADDRESS_POOL, help="where overlays get their subnets")
    parser.add_argument(
        "--no-iptables",
        dest="iptables",
        action="store_false",
        help="iptables off inside each node's netns (no embedded DNS then)",
    )
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        help="an image to load on every node (default: $CONVOY_DOCKER_IMAGE or "
        "convoy-sandbox:latest, and convoy-gateway:latest if present)",
    )
    args = parser.parse_args(argv)
    images = tuple(args.image) or default_images()
    cluster = Cluster.named(args.prefix, args.nodes, args.iptables, images, args.subnet, args.address_pool)
    if args.action == "up":
        try:
            up(cluster)
        except (RuntimeError, subprocess.SubprocessError, OSError) as error:
            print(f"swarm-cluster up failed: {error}\n(`swarm-cluster down` cleans up)", file=sys.stderr)
            return 1
        print(json.dumps(cluster.state(), indent=2))
    elif args.action == "down":
        problems = down(cluster)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    elif args.action == "status":
        print(json.dumps(status(cluster), indent=2))
    else:
        if not args.node:
            parser.error(f"{args.action} needs a node index")
        (cut if args.action == "cut" else restore)(cluster, args.node)
    return 0


def default_images() -> tuple[str, ...]:
    images = [os.environ.get("CONVOY_DOCKER_IMAGE", "convoy-sandbox:latest")]
    if (
        subprocess.run(
            ["docker", "image", "inspect", "convoy-gateway:latest"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        images.append("convoy-gateway:latest")
    return tuple(images)


if __name__ == "__main__":
    sys.exit(main())
