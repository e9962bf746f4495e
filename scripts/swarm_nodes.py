"""The names and shell calls of the swarm harness (see :mod:`scripts.swarm_cluster`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: The default prefix's bridge /24 (its first three octets; see subnet_for()). Away from the
#: Docker runtime's docker_subnet_pool (10.213.0.0/16: its /29s would shadow a node's
#: address) and the egress tests' 10.231.N.0/24.
SUBNET = "10.199.0"
HEARTBEAT = "2s"
# Overlay networks get their subnets from here (Swarm's default 10.0.0.0/8 could
# hand out the harness's own subnet); /24 each, 4096 of them. Overlays live in the
# nodes' namespaces only, so two clusters may use the same pool (``--address-pool``).
ADDRESS_POOL = "10.96.0.0/12"
REQUIRED_TOOLS = ("ip", "nsenter", "iptables", "dockerd", "docker")


@dataclass(frozen=True)
class Node:
    """One engine of the cluster: how to reach it and what it is called on the host."""

    index: int
    name: str  # the netns, the cgroup parent and the Swarm node's hostname label
    ip: str
    socket: str
    root: str  # /tmp/PREFIX-swarm/nK: config, data, exec root, pidfile, log
    veth: str  # the host side of its veth pair: `ip link set VETH down` cuts it off

    @property
    def host(self) -> str:
        """The DOCKER_HOST that names this node's engine."""
        return f"unix://{self.socket}"


@dataclass(frozen=True)
class Cluster:
    """The names of everything one prefix owns; ``up``/``down`` make and unmake them."""

    prefix: str = "cvs"
    size: int = 3
    iptables: bool = True
    images: tuple[str, ...] = ()
    nodes: list[Node] = field(default_factory=list)
    subnet: str = SUBNET  # the first three octets of the bridge's /24
    address_pool: str = ADDRESS_POOL

    @classmethod
    def named(
        cls,
        prefix: str = "cvs",
        size: int = 3,
        iptables: bool = True,
        images: tuple[str, ...] = (),
        subnet: str | None = None,
        address_pool: str = ADDRESS_POOL,
    ) -> Cluster:
        subnet = subnet or os.environ.get("CONVOY_SWARM_SUBNET") or subnet_for(prefix)
        base = Path(tempfile.gettempdir()) / f"{prefix}-swarm"
        nodes = [
            Node(
                k,
                f"{prefix}n{k}",
                f"{subnet}.{10 + k}",
                str(base / f"n{k}" / "docker.sock"),
                str(base / f"n{k}"),
                f"{prefix}v{k}",
            )
            for k in range(1, size + 1)
        ]
        return cls(prefix, size, iptables, images, nodes, subnet, address_pool)

    @property
    def base(self) -> Path:
        return Path(tempfile.gettempdir()) / f"{self.prefix}-swarm"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def host_ip(self) -> str:
        return f"{self.subnet}.1"

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def comment(self) -> str:
        return f"{self.prefix}-swarm"

    def state(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "bridge": self.bridge,
            "host_ip": self.host_ip,
            "subnet": f"{self.subnet}.0/24",
            "address_pool": self.address_pool,
            "manager": self.manager.host,
            "nodes": [asdict(n) | {"host": n.host} for n in self.nodes],
        }


def subnet_for(prefix: str) -> str:
    """The bridge's /24 (three octets) of a prefix: :data:`SUBNET` for ``cvs``, else one of
    ``10.214.1-250`` by a hash of the prefix, so two clusters side by side never share addresses."""
    if prefix == "cvs":
        return SUBNET
    return f"10.214.{zlib.crc32(prefix.encode()) % 250 + 1}"


def sh(*args: str, check: bool = True, timeout: float = 120, stdin: object = None) -> str:
    """Run one command; its stdout (stripped). A failed ``check`` raises with its stderr."""
    done = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, stdin=stdin
    )  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return str(done.stdout).strip()


def docker(node: Node, *args: str, check: bool = True, timeout: float = 120) -> str:
    return sh("docker", "-H", node.host, *args, check=check, timeout=timeout)


def missing_prerequisite() -> str | None:
    """Why a cluster cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bridge, iptables, dockerd)"
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            return f"no {tool} (scripts/lib.sh ensure_swarm_packages installs it)"
    return None


def accept_rule(cluster: Cluster) -> list[str]:
    chain = "DOCKER-USER" if sh("iptables", "-n", "-L", "DOCKER-USER", check=False) else "FORWARD"
    return [
        chain,
        "-i",
        cluster.bridge,
        "-o",
        cluster.bridge,
        "-m",
        "comment",
        "--comment",
        cluster.comment,
        "-j",
        "ACCEPT",
    ]


def answers(node: Node) -> bool:
    if not Path(node.socket).exists():
        return False
    return (
        subprocess.run(
            ["docker", "-H", node.host, "version"], capture_output=True, timeout=20, check=False
        ).returncode
        == 0
    )


def swarm_state(node: Node) -> str:
    return docker(node, "info", "--format", "{{.Swarm.LocalNodeState}}", check=False)
