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
import json
import os
import subprocess
import sys

from scripts.swarm_nodes import (
    ADDRESS_POOL,
    Cluster,
    Node,
    answers,
    docker,
    missing_prerequisite,
    sh,
    swarm_state,
)
from scripts.swarm_teardown import down
from scripts.swarm_up import node_id, up

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
