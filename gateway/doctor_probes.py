"""What ``convoy doctor`` runs inside a sandbox, as tasks, and how it reads their answers.

Each probe is a small Python program (the sandbox image has python3) that prints
one line ``DOCTOR {json}``; every one is bounded in time and in what it starts.
Network probes are TCP connects *from inside the sandbox*, never from the host:
a connection made, or refused (a reset came back), means the target was reached;
any other failure (no route, no answer) means it was not.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from gateway.runtimes.docker_token import AGENT_CAPABILITIES

MARK = "DOCTOR "


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Who the sandbox's code runs as, what it may write, whether a Docker socket is
#: inside, and which of the targets (argv[1]) and of its default routes' next hops it reaches.
INSIDE = r"""
import errno, json, os, socket, sys, threading
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
facts = {key: status[key].split() for key in ("Uid", "Gid", "CapEff", "CapPrm", "NoNewPrivs")}
def write(path):
    try:
        with open(path, "w") as file:
            file.write("x")
        os.unlink(path)
        return "written"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
facts["writes"] = {path: write(path) for path in ("/usr/doctor", "/etc/doctor", "/doctor")}
sockets = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/docker.sock") if os.path.exists(p)]
sockets += [line.split()[4] for line in open("/proc/self/mountinfo") if "docker.sock" in line]
facts["docker_sockets"] = sockets
routes = [line.split() for line in open("/proc/net/route").readlines()[1:]]
# The next hop of every default route (little-endian hex in /proc/net/route).
hops = [socket.inet_ntoa(bytes.fromhex(r[2])[::-1]) for r in routes if r[1] == "00000000"]
facts["first_hops"] = hops
facts["interfaces"] = sorted(os.listdir("/sys/class/net"))
facts["reach"] = {}
def connect(host, port):
    unix = host.startswith("/")  # a Unix socket's path (another sandbox's agent, as the host sees it)
    sock = socket.socket(socket.AF_UNIX if unix else socket.AF_INET)
    sock.settimeout(6)  # longer than a failed ARP resolution (3 s): no answer from a hop says "unreachable"
    try:
        sock.connect(host if unix else (host, port))
        verdict = "connected"
    except ConnectionRefusedError:
        verdict = "refused"
    except OSError as error:
        verdict = errno.errorcode.get(error.errno or 0, "") or type(error).__name__
    finally:
        sock.close()
    facts["reach"][f"{host}:{port}"] = verdict
targets = [tuple(t) for t in json.loads(sys.argv[1])] + [(hop, 22) for hop in hops]
threads = [threading.Thread(target=connect, args=t) for t in targets]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("DOCTOR " + json.dumps(facts), flush=True)
"""

#: Forks (children only sleep) until the pids limit says no, at most argv[1] times; kills them all.
FORK_BOMB = r"""
import errno, json, os, signal, sys, time
children, stopped = [], None
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except OSError as error:
        stopped = errno.errorcode.get(error.errno, str(error.errno))
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print("DOCTOR " + json.dumps({"forked": len(children), "stopped": stopped}), flush=True)
"""

#: Touches memory 8 MiB at a time, at most argv[1] MiB; says how far it got.
MEMORY_HOG = r"""
import json, sys
chunks = []
while len(chunks) * 8 < int(sys.argv[1]):
    chunks.append(b"\x01" * (8 << 20))
    print("DOCTOR " + json.dumps({"allocated_mib": len(chunks) * 8}), flush=True)
print("DOCTOR " + json.dumps({"survived": True}), flush=True)
"""


def answers(output: str) -> list[dict[str, Any]]:
    """Every ``DOCTOR`` line of a probe's output, parsed."""
    found: list[dict[str, Any]] = []
    for line in output.splitlines():
        if line.startswith(MARK):
            try:
                found.append(dict(json.loads(line[len(MARK) :])))
            except ValueError:
                continue
    return found


def reached(verdict: str) -> bool:
    """Whether a connect verdict means the target answered (a connection, or a reset)."""
    return verdict in ("connected", "refused")


# --- verdicts: a probe's facts (and the engine's view) as a check ---


def non_root(facts: dict[str, Any], info: dict[str, Any]) -> Check:
    host = info.get("HostConfig") or {}
    ids = [int(value) for value in facts["Uid"] + facts["Gid"]]
    no_caps = int(facts["CapEff"][0], 16) == 0 and int(facts["CapPrm"][0], 16) == 0
    extra = sorted(host.get("CapAdd") or [])
    ok = all(ids) and no_caps and facts["NoNewPrivs"] == ["1"] and host.get("CapDrop") == ["ALL"]
    ok = ok and set(extra) <= set(AGENT_CAPABILITIES)
    detail = (
        f"tasks run as uid {facts['Uid'][0]} gid {facts['Gid'][0]}, CapEff {facts['CapEff'][0]}, "
        f"CapPrm {facts['CapPrm'][0]}, NoNewPrivs {facts['NoNewPrivs'][0]}; the container drops "
        f"{host.get('CapDrop')}, adds {extra or 'nothing'} (the agent's start-up only)"
    )
    return Check("non-root", ok, detail)


def read_only(facts: dict[str, Any], info: dict[str, Any]) -> Check:
    writes: dict[str, str] = facts["writes"]
    read_only = bool((info.get("HostConfig") or {}).get("ReadonlyRootfs"))
    ok = read_only and "written" not in writes.values()
    shown = ", ".join(f"{path} {verdict}" for path, verdict in writes.items())
    return Check("read-only-root", ok, f"ReadonlyRootfs {read_only}; writing {shown}")


def network(facts: dict[str, Any], targets: dict[str, list[tuple[str, int]]]) -> list[Check]:
    """One check per entry of ``targets``: none of its addresses may answer. ``no-internet``
    also needs the next hop of every default route to stay silent: past a hop that does not
    answer, nothing leaves; the unroutable address shows how a connect out fails."""
    reach: dict[str, str] = facts["reach"]
    checks = []
    for name, addresses in targets.items():
        if name == "no-internet":
            addresses = [*addresses, *((hop, 22) for hop in facts["first_hops"])]
        verdicts = {f"{host}:{port}": reach.get(f"{host}:{port}", "not probed") for host, port in addresses}
        ok = bool(verdicts) and not any(reached(v) or v == "not probed" for v in verdicts.values())
        shown = ", ".join(f"{where} {verdict}" for where, verdict in verdicts.items())
        if name == "no-internet":
            shown += f" (next hops of the default routes: {', '.join(facts['first_hops']) or 'none'})"
        checks.append(Check(name, ok, shown or "no address to probe"))
    return checks


def loopback_only(facts: dict[str, Any], info: dict[str, Any]) -> Check:
    """A sandbox with no network (the default, with neither internet nor egress) has ``lo`` alone;
    one of the relay design (``docker_relayless`` off) has its own network's interface too."""
    interfaces: list[str] = facts["interfaces"]
    mode = (info.get("HostConfig") or {}).get("NetworkMode")
    if mode == "none":
        return Check("loopback-only", interfaces == ["lo"], f"NetworkMode none; interfaces: {interfaces}")
    detail = f"the relay design (NetworkMode {mode}, a network of its own); interfaces: {interfaces}"
    return Check("loopback-only", len(interfaces) <= 2 and "lo" in interfaces, detail)


def docker_socket(facts: dict[str, Any], info: dict[str, Any]) -> Check:
    mounts = [m.get("Source", "") for m in info.get("Mounts") or [] if "docker.sock" in str(m)]
    inside = facts["docker_sockets"]
    ok = not inside and not mounts
    return Check(
        "no-docker-socket", ok, f"inside: {inside or 'none'}; mounted by the engine: {mounts or 'none'}"
    )
