"""What the benchmarks share (``from benchtools import free_port``: scripts/ is on the path of a
script run from it)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nobody listens on just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
