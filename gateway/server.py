"""``run_server(settings)``: the gateway under uvicorn, blocking until stopped.

Refuses (``SystemExit`` with a message, non-zero) to listen on a non-loopback
address without keys: local single-user mode makes everyone an admin, which is
only safe where nobody else can connect.

What a client that stops reading can pin is bounded at every layer: the routes'
byte-bounded queues (:mod:`gateway.sendqueue`), uvicorn's sansio WebSockets
(write flow control), and the kernel, which drops a connection whose window
stays shut for ``tcp_user_timeout`` seconds (see :func:`set_user_timeout`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings

log = logging.getLogger("convoy.gateway")

#: uvicorn's exit status when it could not start.
STARTUP_FAILURE = 3


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.local_mode and not is_loopback(settings.host):
        raise SystemExit(
            f"convoy: refusing to listen on {settings.host} without API keys: local single-user mode makes "
            "everyone an admin. Set CONVOY_API_KEYS / CONVOY_ADMIN_KEYS, or listen on 127.0.0.1."
        )
    try:
        app = create_app(settings)
    except ValueError as error:
        raise SystemExit(f"convoy: bad settings: {error}") from None
    if settings.local_mode:
        log.info(
            "local single-user mode: no API keys configured, everyone is the local admin (loopback only)"
        )
    log.info(
        "convoy gateway listening on http://%s:%d (runtime: %s)",
        settings.host,
        settings.port,
        settings.runtime,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        lifespan="on",
        access_log=settings.access_log,
        ws_max_size=settings.ws_max_message_bytes,
        # What a client that stops reading (or floods) costs: this implementation waits for the
        # transport to drain (64 KiB) before each write and stops reading after each message
        # until the route takes it (the legacy one queues ws_max_queue messages of ws_max_size).
        ws="websockets-sansio",
    )
    listener = config.bind_socket()
    set_user_timeout(listener, settings.tcp_user_timeout)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT: stopped, as uvicorn.run does
        server.run(sockets=[listener])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def set_user_timeout(sock: socket.socket, seconds: float) -> None:
    """``TCP_USER_TIMEOUT`` on the listener, inherited by every connection: the kernel drops
    a connection whose data stays unacknowledged, or whose peer's window stays shut (a
    client that stopped reading), that long, and with it what the gateway still buffered
    for it. 0 (or a platform without it) leaves the kernel's default (many minutes)."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if seconds > 0 and option is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
