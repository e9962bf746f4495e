"""A real Docker Swarm of N engines on one machine, one network namespace per node.

Used by ``scripts/swarm-cluster up|down|status|cut|restore`` and by the tests'
session fixture (``tests/gateway/swarm_cluster.py``). Everything it makes is
named after one prefix (default ``cvs``), so ``down`` finds it all again, even
after a half-failed ``up`` or in another process:

- a Linux bridge ``PREFIXbr`` with the host's address ``SUBNET.1/24`` (``--subnet``;
  by default ``10.213.0`` for the prefix ``cvs`` and a /24 of ``10.214.0.0/16`` chosen
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
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUBNET = "10.213.0"  # the default prefix's; see subnet_for()
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
        base = Path(tempfile.gettempdir()) / f"{prefix}-swarm"
        subnet = subnet or os.environ.get("CONVOY_SWARM_SUBNET") or subnet_for(prefix)
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
    """The bridge's /24 (three octets) of a prefix: ``10.213.0`` for ``cvs``, else one of
    ``10.214.1-250`` by a hash of the prefix (outside the Docker runtime's default
    ``docker_subnet_pool`` 10.213.0.0/16 too, so its /29s never shadow a node's address)."""
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


def _rule(cluster: Cluster) -> list[str]:
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


def _accept_rule(cluster: Cluster) -> None:
    rule = _rule(cluster)
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
    if _answers(node):
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


def _answers(node: Node) -> bool:
    if not Path(node.socket).exists():
        return False
    return (
        subprocess.run(
            ["docker", "-H", node.host, "version"], capture_output=True, timeout=20, check=False
        ).returncode
        == 0
    )


def _wait_engine(node: Node, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(node):
        if time.monotonic() > deadline:
            tail = (Path(node.root) / "dockerd.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{node.name}: dockerd did not answer in {timeout:.0f}s:\n{tail}")
        time.sleep(0.3)


def _swarm_state(node: Node) -> str:
    return docker(node, "info", "--format", "{{.Swarm.LocalNodeState}}", check=False)


def _swarm(cluster: Cluster) -> None:
    manager = cluster.manager
    if _swarm_state(manager) != "active":
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
        if _swarm_state(node) != "active":
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


# ---- down -------------------------------------------------------------------------------------


def down(cluster: Cluster) -> list[str]:
    """Remove everything the prefix owns, whatever state it is in; returns what failed (best effort)."""
    problems: list[str] = []

    def attempt(what: str, *args: str) -> None:
        try:
            sh(*args, timeout=60)
        except (RuntimeError, subprocess.SubprocessError, OSError) as error:
            problems.append(f"{what}: {error}")

    with concurrent.futures.ThreadPoolExecutor(len(cluster.nodes) or 1) as pool:
        list(pool.map(lambda node: _stop_engine(node, problems), cluster.nodes))
    for node in cluster.nodes:
        _unmount_under(Path(node.root), problems)
        if node.name in sh("ip", "netns", "list", check=False).split():
            attempt(f"netns {node.name}", "ip", "netns", "del", node.name)
        if sh("ip", "link", "show", node.veth, check=False):
            attempt(f"veth {node.veth}", "ip", "link", "del", node.veth)
        _remove_cgroups(node.name)
    if sh("ip", "link", "show", cluster.bridge, check=False):
        attempt(f"bridge {cluster.bridge}", "ip", "link", "del", cluster.bridge)
    for chain in ("DOCKER-USER", "FORWARD"):
        rule = [chain, *_rule(cluster)[1:]]
        while subprocess.run(["iptables", "-C", *rule], capture_output=True, check=False).returncode == 0:
            attempt("iptables rule", "iptables", "-D", *rule)
            if problems and problems[-1].startswith("iptables"):
                break
    shutil.rmtree(cluster.base, ignore_errors=True)
    if cluster.base.exists():
        problems.append(f"{cluster.base} could not be removed")
    return problems


def _stop_engine(node: Node, problems: list[str]) -> None:
    """Remove the node's containers, stop its dockerd, then kill whatever it left (shims)."""
    if _answers(node):
        ids = docker(node, "ps", "-aq", check=False).split()
        if ids:
            docker(node, "rm", "-f", *ids, check=False, timeout=120)
    pidfile = Path(node.root) / "docker.pid"
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().strip() or 0)
        except ValueError:
            pid = 0
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    for pid in _processes_mentioning(node.root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _processes_mentioning(node.root) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _processes_mentioning(node.root)
    if left:
        problems.append(f"{node.name}: processes left {left}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def _processes_mentioning(root: str) -> list[int]:
    """Processes whose command line names the node's root (its dockerd, containerd, shims)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _unmount_under(root: Path, problems: list[str]) -> None:
    prefix = str(root) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        if subprocess.run(["umount", "-l", point], capture_output=True, check=False).returncode != 0:
            problems.append(f"could not unmount {point}")


def _remove_cgroups(name: str) -> None:
    """The node's cgroup parent (cgroup v1: one per controller; v2: one), deepest first."""
    for parent in Path("/sys/fs/cgroup").glob(f"**/{name}") if Path("/sys/fs/cgroup").exists() else []:
        below = sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for path in [*below, parent]:
            with contextlib.suppress(OSError):
                path.rmdir()


# ---- status, cut, restore ---------------------------------------------------------------------


def status(cluster: Cluster) -> dict[str, object]:
    """What exists now: per node whether its engine answers and its swarm state; the node list."""
    state = cluster.state()
    nodes = []
    for node in cluster.nodes:
        answers = _answers(node)
        nodes.append(
            {
                "name": node.name,
                "ip": node.ip,
                "host": node.host,
                "answers": answers,
                "swarm": _swarm_state(node) if answers else None,
                "link": "down" if "state DOWN" in sh("ip", "link", "show", node.veth, check=False) else "up",
            }
        )
    state["nodes"] = nodes
    if _answers(cluster.manager):
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
