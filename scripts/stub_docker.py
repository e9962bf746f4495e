"""A stand-in Docker engine on a Unix socket: ``n`` idle network-less sandboxes of one
installation, answered with the shapes (and sizes) the real engine gives, so a real gateway
(``convoy serve --runtime docker``, ``DOCKER_HOST=unix://...``) adopts them at start and
its periodic loops list them as they would on a host running that many. No container runs:
nothing here starts, stops or removes anything (creates answer 500).

``python scripts/stub_docker.py SOCKET INSTALL N`` (used by ``scripts/bench_loops.py``).
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

_VERSIONED = re.compile(r"^/v1\.\d+")
_IMAGE = "convoy-sandbox:latest"


def _summary(install: str, conversation: uuid.UUID, created: int) -> dict[str, Any]:
    """One sandbox as ``GET /containers/json`` lists it (about 2.2 KB, as on Docker 24)."""
    name = f"convoy-{install}-{conversation}"
    socket_dir = f"/root/.convoy/sockets/{install}/{conversation}"
    labels = {
        "convoy.agent-socket": f"{socket_dir}/agent.sock",
        "convoy.conversation-id": str(conversation),
        "convoy.created-at": datetime.fromtimestamp(created, UTC).isoformat(),
        "convoy.env-keys": "[]",
        "convoy.idle-timeout": "1800.0",
        "convoy.image-version": "0.1.0",
        "convoy.install": install,
        "convoy.internet": "false",
        "convoy.network": "none",
        "convoy.on-idle": "delete",
        "convoy.owner": "local",
        "convoy.role": "sandbox",
        "convoy.source-hash": "e" * 64,
        "convoy.template": "default",
        "convoy.title": "bench",
        "org.opencontainers.image.title": "convoy-sandbox",
        "org.opencontainers.image.version": "0.1.0",
    }
    return {
        "Id": uuid.uuid4().hex + uuid.uuid4().hex,
        "Names": [f"/{name}"],
        "Image": _IMAGE,
        "ImageID": "sha256:" + "5" * 64,
        "Command": "/opt/convoy/lib/ld-linux-x86-64.so.2 --library-path /opt/convoy/lib "
        "/opt/convoy/bin/python3 -I -X utf8 -m sandbox_agent --uds /run/convoy-agent/agent.sock "
        "--workspace /data/workspace --state-dir /data/state --token-file /data/agent/token "
        "--run-as 10001:10001 --template default --claim-file /data/agent/claim.json",
        "Created": created,
        "Ports": [],
        "Labels": labels,
        "State": "running",
        "Status": "Up 5 minutes",
        "HostConfig": {"NetworkMode": "none"},
        "NetworkSettings": {"Networks": {"none": {"NetworkID": "1" * 64, "EndpointID": "f" * 64}}},
        "Mounts": [
            {"Type": "bind", "Source": socket_dir, "Destination": "/run/convoy-agent", "RW": True},
            {
                "Type": "volume",
                "Name": name,
                "Source": f"/var/lib/docker/volumes/{name}/_data",
                "Destination": "/data",
                "Driver": "local",
                "RW": True,
            },
        ],
    }


def _inspect(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "Id": summary["Id"],
        "Name": summary["Names"][0],
        "Created": datetime.fromtimestamp(summary["Created"], UTC).isoformat(),
        "State": {"Status": "running", "Running": True, "Paused": False, "OOMKilled": False, "ExitCode": 0},
        "Config": {"Labels": summary["Labels"], "Env": [], "Image": _IMAGE},
        "HostConfig": {"NetworkMode": "none"},
        "Mounts": summary["Mounts"],
    }


def _matches(labels: dict[str, str], wanted: list[str]) -> bool:
    for one in wanted:
        key, has_value, value = one.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


def _token_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"stub-token\n"
        info = tarfile.TarInfo("token")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class StubEngine:
    def __init__(self, install: str, count: int) -> None:
        now = int(time.time()) - 600
        self.install = install
        self.containers = [_summary(install, uuid.uuid4(), now) for _ in range(count)]
        self.by_key = {c["Id"]: c for c in self.containers} | {c["Names"][0][1:]: c for c in self.containers}
        self.calls: dict[str, int] = {}
        self.listings: dict[tuple[str, ...], bytes] = {}
        self.archive = _token_archive()

    def count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = _VERSIONED.sub("", request.path)
        filters = json.loads(request.query.get("filters", "{}") or "{}")
        labels = filters.get("label", [])
        if isinstance(labels, dict):
            labels = [key for key, on in labels.items() if on]
        parts = path.strip("/").split("/")
        self.count(f"{request.method} {parts[0]}" + (f" {parts[-1]}" if len(parts) > 2 else ""))
        if path in ("/version", "/_ping"):
            return web.json_response({"ApiVersion": "1.43", "Version": "24.0.0", "Os": "linux"})
        if parts[0] == "images" and parts[-1] == "json" and len(parts) > 2:
            return web.json_response({"Id": "sha256:" + "5" * 64, "Config": {"Labels": {}}})
        if path in ("/images/json", "/networks"):
            return web.json_response([])
        if path == "/volumes":
            return web.json_response({"Volumes": [], "Warnings": None})
        if path == "/containers/json":
            body = self.listings.get(tuple(labels))
            if body is None:  # encoded once per filter: the stub's own work stays off the figures
                body = json.dumps([c for c in self.containers if _matches(c["Labels"], labels)]).encode()
                self.listings[tuple(labels)] = body
            return web.Response(body=body, content_type="application/json")
        if parts[0] == "containers" and len(parts) == 3:
            found = self.by_key.get(parts[1])
            if found is None:
                return web.json_response({"message": "No such container"}, status=404)
            if parts[2] == "json":
                return web.json_response(_inspect(found))
            if parts[2] == "archive" and request.query.get("path", "").endswith("/token"):
                return web.Response(body=self.archive, content_type="application/x-tar")
            return web.json_response({"message": "No such file"}, status=404)
        if path == "/stub/calls":
            return web.json_response(self.calls)
        return web.json_response({"message": f"the stub engine does not do {path}"}, status=500)


def main(socket_path: str, install: str, count: int) -> None:
    engine = StubEngine(install, count)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", engine.handle)
    web.run_app(app, path=socket_path, print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
