"""A WebSocket client that never reads, for the tests of what a slow consumer costs the
gateway and how it is closed: a raw socket, read once the server has closed it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

from gw_helpers import TIMEOUT


def stalled_websocket(base_url: str, path: str) -> socket.socket:
    """A WebSocket client that never reads: a raw socket with a tiny receive window
    that sends the upgrade request and nothing else (a client library would keep
    reading into its own memory)."""
    port = int(base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    sock.setblocking(False)
    return sock


async def _stalled_read(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Reads everything the server sent to a :func:`stalled_websocket` until it closes
    the connection; its whole frames as (opcode, payload) (a cut-off last one is left out)."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    async with asyncio.timeout(TIMEOUT):
        while chunk := await loop.sock_recv(sock, 1 << 20):
            data += chunk
    sock.close()
    at = data.index(b"\r\n\r\n") + 4  # past the handshake answer
    frames = []
    while at < len(data):  # server frames: FIN/opcode, length (7, 16 or 64 bits), unmasked payload
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            length, at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at : at + 8], "big"), at + 8
        if at + length <= len(data):
            frames.append((opcode, bytes(data[at : at + length])))
        at += length
    return frames


def _close_code(frames: list[tuple[int, bytes]]) -> int | None:
    codes = [int.from_bytes(body[:2], "big") for opcode, body in frames if opcode == 0x8 and len(body) >= 2]
    return codes[-1] if codes else None


async def stalled_close_code(sock: socket.socket) -> int | None:
    """Reads everything the server sent to a :func:`stalled_websocket` until it closes
    the connection; the code of its close frame."""
    return _close_code(await _stalled_read(sock))


async def stalled_frames(sock: socket.socket) -> tuple[list[dict[str, Any]], int | None]:
    """Everything a :func:`stalled_websocket` was sent, read once the server closes: the
    text frames (parsed) and the close code."""
    frames = await _stalled_read(sock)
    return [json.loads(payload) for opcode, payload in frames if opcode == 0x1], _close_code(frames)
