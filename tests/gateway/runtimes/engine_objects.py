"""What the fake engine (fake_engine.py) keeps of each object, and how the engine reports it:
a container's listing and ``inspect`` output, a network's and a volume's listing, and the
label and name filters every listing takes."""

from __future__ import annotations

import io
import ipaddress
import posixpath
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.runtimes import docker_config as cfg


@dataclass
class FakeContainer:
    name: str
    config: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    status: str = "created"
    exit_code: int = 0
    oom_killed: bool = False
    logs: str = ""
    networks: set[str] = field(default_factory=set)
    host_port: int | None = None
    #: What ``put_archive`` put into the container: path -> content.
    files: dict[str, bytes] = field(default_factory=dict)
    #: What ``stats`` answers while it runs (tests set it; the engine's shape).
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def transition(self, was: str, now: str) -> bool:
        """Status ``was`` becomes ``now``; False (and nothing changes) in any other status."""
        if self.status != was:
            return False
        self.status = now
        return True

    def end(self, code: int, oom: bool, logs: str) -> None:
        """The container exits with ``code`` (``oom``: killed for its memory), printing ``logs``."""
        self.status, self.exit_code, self.oom_killed = "exited", code, oom
        self.logs += logs

    def mounts(self, volume: str) -> bool:
        """Whether the container mounts ``volume``."""
        mounts = (self.config.get("HostConfig") or {}).get("Mounts") or []
        return any(mount["Source"] == volume for mount in mounts)

    def extract(self, path: str, archive: bytes) -> None:
        """``put_archive``: the tar ``archive``'s files, kept in ``files`` under ``path``."""
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    self.files[posixpath.join(path, member.name)] = extracted.read()

    def summary(self) -> dict[str, Any]:
        """The container as the engine lists it."""
        return {
            "Id": self.id,
            "Names": [f"/{self.name}"],
            "Labels": self.labels,
            "State": self.status,
            "Created": int(self.created),
            "Image": self.config.get("Image"),
            "Ports": (
                [{"PrivatePort": cfg.AGENT_PORT, "PublicPort": self.host_port, "IP": "127.0.0.1"}]
                if self.host_port and self.status == "running"
                else []
            ),
        }

    def inspected(self) -> dict[str, Any]:
        """The container as the engine's ``inspect`` shows it."""
        ports = [{"HostIp": "127.0.0.1", "HostPort": str(self.host_port)}] if self.host_port else []
        env = list(self.config.get("Env") or [])
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "Config": {"Labels": self.labels, "Env": env, "Image": self.config.get("Image")},
            "HostConfig": self.config.get("HostConfig") or {},
            "State": {
                "Status": self.status,
                "Running": self.status == "running",
                "ExitCode": self.exit_code,
                "OOMKilled": self.oom_killed,
                "Error": "",
            },
            "NetworkSettings": {"Ports": {f"{cfg.AGENT_PORT}/tcp": ports}, "Networks": sorted(self.networks)},
        }


@dataclass
class FakeNetwork:
    config: dict[str, Any]
    created: float = field(default_factory=time.time)
    foreign: bool = False

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    def summary(self, name: str) -> dict[str, Any]:
        """The network as the engine lists it."""
        return {
            "Name": name,
            "Labels": self.labels,
            "Created": rfc3339(self.created),
            "IPAM": self.config.get("IPAM") or {},
        }

    @property
    def subnets(self) -> list[ipaddress.IPv4Network]:
        found = ((self.config.get("IPAM") or {}).get("Config")) or []
        return [ipaddress.IPv4Network(item["Subnet"]) for item in found if item.get("Subnet")]

    def overlaps(self, other: FakeNetwork) -> bool:
        """Whether a subnet of this network overlaps one of ``other``'s (Docker refuses that)."""
        return any(mine.overlaps(theirs) for mine in self.subnets for theirs in other.subnets)


def rfc3339(stamp: float) -> str:
    """As the engine writes times: RFC 3339 with nanoseconds."""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def matches(labels: dict[str, str], name: str, filters: dict[str, list[str]] | None) -> bool:
    for wanted in (filters or {}).get("label", []):
        key, _, value = wanted.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    names = (filters or {}).get("name")
    return not names or any(part in name for part in names)


def volume_summary(name: str, volume: dict[str, Any]) -> dict[str, Any]:
    """The volume ``name`` (as the fake engine keeps it) as the engine lists it."""
    return {
        "Name": name,
        "Labels": volume["labels"],
        "CreatedAt": rfc3339(volume["created"]),
        "Mountpoint": volume.get("mountpoint", f"/nonexistent/volumes/{name}/_data"),
    }
