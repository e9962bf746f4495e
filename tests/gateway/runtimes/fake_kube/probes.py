"""Pod addresses and readiness probes."""

from __future__ import annotations

import asyncio
import random
import socket

from fake_kube.pod_process import Running
from fake_kube.store import Obj


class Addresses:
    """Loopback addresses for pods: all of 127/8 is loopback on Linux, so each pod gets one
    of its own (``127.<random>.x.y``, a random second octet per fake so that two fakes, or
    anything else on the machine, do not collide)."""

    def __init__(self) -> None:
        self._octet, self._next = random.randint(100, 250), 0

    def take(self, port: int) -> str:
        """A fresh address that nothing listens on at ``port``."""
        while True:
            self._next += 1
            ip = f"127.{self._octet}.{self._next // 250}.{self._next % 250 + 2}"
            with socket.socket() as probe:
                try:
                    probe.bind((ip, port))
                except OSError:
                    continue
            return ip


async def ready(running: Running, pod: Obj) -> bool:
    """The pod's readiness probe (its ``readinessProbe.httpGet``, or ``GET /ready`` on the agent's
    port): True on an HTTP 200 within a second. The probe's timings are not honoured (the
    kubelet probes often, to keep tests short)."""
    container = pod["spec"]["containers"][0]
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    port = probe.get("port", running.port)
    if isinstance(port, str):
        named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        port = named.get(port, running.port)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(running.host, int(port)), 1)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"GET {probe.get('path', '/ready')} HTTP/1.0\r\nHost: {running.host}\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 1)
        return line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
