"""What the benchmarks share (``from benchtools import free_port``: scripts/ is on the path of a
script run from it)."""

from __future__ import annotations

import argparse
import socket


def free_port() -> int:
    """A loopback port nobody listens on just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_arguments(doc: str | None, *, runs: int, runs_help: str) -> argparse.ArgumentParser:
    """A bench's command line: its module docstring ``doc`` as ``--help``'s text (kept as
    written), and ``--runs`` (default ``runs``); the bench adds its own options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=runs, help=runs_help)
    return parser
