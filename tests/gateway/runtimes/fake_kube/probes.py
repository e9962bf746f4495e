"""Pod addresses and readiness probes."""

from __future__ import annotations

import asyncio
import random
import socket

from fake_kube.pod_process import Running
from fake_kube.store import Obj


class Addresses:
    """Loopback addresses for pods: all of 127/8 is loopback on Linux, so each pod gets one
    of its own, drawn at random from 127.64.0.0/10 (so that fakes in several test processes
    at once, or anything else on the machine, hardly ever meet) and skipped when something
    listens on it already, as an IPAM never hands out an address in use."""

    def __init__(self) -> None:
        self._given: set[str] = set()

    def take(self, port: int) -> str:
        """A fresh address that nothing listens on at ``port``."""
        while True:
            ip = f"127.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
            if ip in self._given:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((ip, port))
                except OSError:
                    continue
            self._given.add(ip)
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
