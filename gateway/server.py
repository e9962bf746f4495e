"""``run_server(settings)``: the gateway under uvicorn, blocking until stopped.

Refuses (``SystemExit`` with a message, non-zero) to listen on a non-loopback
address without keys: local single-user mode makes everyone an admin, which is
only safe where nobody else can connect.
"""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings

log = logging.getLogger("convoy.gateway")


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
    uvicorn.run(
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
