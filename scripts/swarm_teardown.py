"""Tearing the swarm harness down: engines, their leftovers, namespaces, bridge, rule, dirs
(see :mod:`scripts.swarm_cluster`). Works on whatever state an ``up`` left."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from scripts.swarm_nodes import Cluster, Node, accept_rule, answers, docker, sh


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
        # Deleting the netns takes its veth pair with it, a moment later: only what stays counts.
        if sh("ip", "link", "show", node.veth, check=False):
            subprocess.run(["ip", "link", "del", node.veth], capture_output=True, check=False)
            if sh("ip", "link", "show", node.veth, check=False):
                problems.append(f"veth {node.veth} could not be removed")
        _remove_cgroups(node.name)
    if sh("ip", "link", "show", cluster.bridge, check=False):
        attempt(f"bridge {cluster.bridge}", "ip", "link", "del", cluster.bridge)
    for chain in ("DOCKER-USER", "FORWARD"):
        rule = [chain, *accept_rule(cluster)[1:]]
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
    if answers(node):
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
