"""convoy relay: the only way into a sandbox from outside its network.

A sandbox sits alone on its own internal network that has no address on the
host (``com.docker.network.bridge.inhibit_ipv4``): it can reach neither the
internet, nor the host, nor another sandbox. This relay is the one other
member of that network; it is also on a network the gateway reaches (a port
published on 127.0.0.1, or a shared network) and forwards every TCP connection
it accepts, byte for byte, to the agent at ``TARGET_HOST:TARGET_PORT``.

Usage: ``python3 -I -S relay.py LISTEN_PORT TARGET_HOST TARGET_PORT``.
Standard library only, so it starts in milliseconds and stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys

CHUNK = 256 * 1024
CONNECT_TIMEOUT = 5.0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side; raises on a broken connection."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        writer.close()


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    target: tuple[str, int],
) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.wait_for(
            asyncio.open_connection(*target), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError):
        # The agent is not listening (yet): the caller sees the connection close.
        _close(client_writer)
        return
    for writer in (client_writer, upstream_writer):
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pumps = [
        asyncio.ensure_future(_pump(client_reader, upstream_writer)),
        asyncio.ensure_future(_pump(upstream_reader, client_writer)),
    ]
    try:
        # A clean EOF in one direction lets the other finish; an error ends both.
        pending: set[asyncio.Future[None]] = set(pumps)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not future.cancelled() and future.exception() is not None for future in done):
                break
    finally:
        for future in pumps:
            future.cancel()
        _close(client_writer)
        _close(upstream_writer)


async def main(listen_port: int, target: tuple[str, int]) -> None:
    server = await asyncio.start_server(
        lambda reader, writer: _relay(reader, writer, target), host="0.0.0.0", port=listen_port, backlog=512
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: relay.py LISTEN_PORT TARGET_HOST TARGET_PORT")
    asyncio.run(main(int(sys.argv[1]), (sys.argv[2], int(sys.argv[3]))))
