"""WebSocket proxy between one client and one sandbox agent's ``/ws`` (or another of its sockets).

:func:`connect_upstream` opens the agent's event stream, :func:`connect_agent_socket`
any of the agent's sockets (a terminal's), token in the handshake header;
:func:`proxy_frames` passes frames both ways until one side closes, then closes
the other with the same code where that code may be sent:

- upstream closed with a sendable code (1000, 4008 too slow, ...) -> that code;
- upstream closed without one (1005) -> 1000; abnormally (1006, ...) -> 4502
  ``WS_CLOSE_UPSTREAM_UNAVAILABLE``;
- the conversation ended meanwhile (deleted, reaped) -> 4410
  ``WS_CLOSE_CONVERSATION_ENDED`` (decided by the caller's ``ended()``);
- the client closed -> upstream gets the client's code (1000 when unsendable);
- the client stalled: its buffer (``ws_send_buffer_bytes``) full and nothing
  taken for ``ws_stall_timeout`` seconds -> 4008 ``WS_CLOSE_TOO_SLOW``: it
  resumes with ``after_seq`` = the last seq it got and misses nothing (it got
  a gapless prefix of the stream).

The upstream is read into a byte-bounded :class:`~gateway.sendqueue.SendQueue`;
while it is full the upstream is not read (the agent holds the rest, and drops
a follower past its own lag limits). So what a slow client costs the gateway is
that bound plus :data:`UPSTREAM_MAX_QUEUE` frames, however large the frames.
Text and binary frames are relayed as they are, never parsed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import websockets
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection

from gateway.agent_transport import connect_websocket
from gateway.heap import give_back_soon
from gateway.runtimes.base import SandboxHandle
from gateway.sendqueue import SendQueue
from gateway.settings import Settings
from sandbox_agent.protocol import (
    PASSIVE_HEADER,
    TOKEN_HEADER,
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_TOO_SLOW,
    WS_CLOSE_UPSTREAM_UNAVAILABLE,
)

#: Seconds a closing client gets to take its last frames and the close frame, unless told.
CLOSE_TIMEOUT: float = Settings.model_fields["ws_close_timeout"].default
#: A client that left with more than this queued at its worst: give memory back after it.
LARGE_BUFFER_BYTES = 1024 * 1024
#: Frames the upstream connection holds before it stops reading (the relay takes them at once
#: while its queue has room; so they are what a slow client costs beyond that queue).
UPSTREAM_MAX_QUEUE = 4


class UpstreamUnavailable(Exception):
    """The agent's WebSocket could not be opened."""


def sendable(code: int | None) -> int:
    """A close code that may go on the wire in place of an upstream's ``code``."""
    if code == 1005:  # closed without a code: a normal close
        return 1000
    if code is None or code in (1004, 1006, 1015) or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return WS_CLOSE_UPSTREAM_UNAVAILABLE
    return code


async def connect_upstream(
    handle: SandboxHandle, after_seq: int, settings: Settings, passive: bool = False
) -> ClientConnection:
    """The agent's event stream after ``after_seq``; ``passive``: the gateway's own (the
    firehose), which is no activity of the sandbox (see :mod:`sandbox_agent.activity`)."""
    return await connect_agent_socket(handle, f"/ws?after_seq={after_seq}", settings, passive)


async def connect_agent_socket(
    handle: SandboxHandle, path: str, settings: Settings, passive: bool = False
) -> ClientConnection:
    """The agent's WebSocket at ``path`` (with its query; built by the caller from validated
    parts only)."""
    headers = {TOKEN_HEADER: handle.token} | ({PASSIVE_HEADER: "1"} if passive else {})
    try:
        return await connect_websocket(
            handle.base_url,
            path,
            additional_headers=headers,
            max_size=settings.ws_max_message_bytes,
            max_queue=UPSTREAM_MAX_QUEUE,
            compression=None,
            open_timeout=settings.proxy_connect_timeout,
            ping_interval=None,  # loopback or a private network: the agent's liveness is watched elsewhere
            proxy=None,
        )
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed) as error:
        # ConnectionClosed: the agent went away during the handshake (removed meanwhile).
        raise UpstreamUnavailable(f"the sandbox's event stream could not be opened: {error}") from None


async def _upstream_to_queue(upstream: ClientConnection, queue: SendQueue, stall_timeout: float) -> bool:
    """Reads ``upstream`` into ``queue`` while it has room; ``True`` when the client stalled
    (the queue overflowed), ``False`` when the upstream closed."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for message in upstream:
            if not await queue.put(message, stall_timeout):
                return True
    queue.finish()
    return False


async def _queue_to_client(queue: SendQueue, websocket: WebSocket) -> None:
    """Writes what the queue holds to the client, until the end of the stream."""
    send = websocket.send
    while (frame := await queue.get()) is not None:
        if isinstance(frame, str):
            await send({"type": "websocket.send", "text": frame})
        else:
            await send({"type": "websocket.send", "bytes": frame})


async def _client_to_upstream(
    websocket: WebSocket, upstream: ClientConnection, on_frame: Callable[[], None]
) -> int:
    """Returns the client's close code."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1000)
        on_frame()
        text = message.get("text")
        await upstream.send(text if text is not None else message.get("bytes") or b"")


async def proxy_frames(
    websocket: WebSocket,
    upstream: ClientConnection,
    *,
    ended: Callable[[], bool],
    on_frame: Callable[[], None] = lambda: None,
    settings: Settings,
    resume_hint: str = "reconnect with after_seq to resume",
) -> None:
    """Pump frames between the accepted ``websocket`` and ``upstream`` until either
    closes; close the other side as the module docstring says. ``settings`` give the
    bounds (``ws_send_buffer_bytes``, ``ws_stall_timeout``, ``ws_close_timeout``);
    ``resume_hint`` ends the reason of a too-slow close (how this stream is resumed)."""
    close_timeout = settings.ws_close_timeout
    queue = SendQueue(settings.ws_send_buffer_bytes)
    reader = asyncio.ensure_future(_upstream_to_queue(upstream, queue, settings.ws_stall_timeout))
    writer = asyncio.ensure_future(_queue_to_client(queue, websocket))
    up = asyncio.ensure_future(_client_to_upstream(websocket, upstream, on_frame))
    try:
        await asyncio.wait((reader, writer, up), return_when=asyncio.FIRST_COMPLETED)
        if reader.done() and not reader.cancelled() and reader.exception() is None and not reader.result():
            # The upstream closed: the client gets what is queued (within the close timeout) first.
            await asyncio.wait((writer, up), timeout=close_timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, writer, up):
            task.cancel()
        outcome = await asyncio.gather(reader, writer, up, return_exceptions=True)
    too_slow, client_code = outcome[0] is True, outcome[2] if isinstance(outcome[2], int) else None
    if client_code is not None or isinstance(outcome[1], OSError | RuntimeError | WebSocketDisconnect):
        # The client left: tell the agent why, politely.
        code = client_code if client_code is not None else 1001
        await upstream.close(code if code in range(3000, 5000) or code in (1000, 1001) else 1000)
        if queue.peak_bytes > LARGE_BUFFER_BYTES:
            give_back_soon()
        return
    if too_slow or writer.cancelled():
        # Stalled, or could not take the rest before the upstream's close: too slow either way.
        # The upstream, not read meanwhile, could not take part in a closing handshake: dropped.
        upstream.transport.abort()
        give_back_soon()  # what it and the queue held
        reason = f"too slow: {resume_hint}"
        await close_client(websocket, WS_CLOSE_TOO_SLOW, reason, within=close_timeout)
        give_back_soon()
        return
    await upstream.close()
    code = WS_CLOSE_CONVERSATION_ENDED if ended() else sendable(upstream.close_code)
    reason = "the conversation ended" if code == WS_CLOSE_CONVERSATION_ENDED else upstream.close_reason or ""
    await close_client(websocket, code, reason, within=close_timeout)


async def close_client(
    websocket: WebSocket, code: int, reason: str = "", *, within: float = CLOSE_TIMEOUT
) -> None:
    """Close an accepted client, whatever state it is in (a gone client is fine). A client
    that does not read may never take the close frame: after ``within`` seconds it is
    left to the server, which closes the connection once the client reads or goes."""
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect, TimeoutError):
        async with asyncio.timeout(within):
            await websocket.close(code, reason[:120])
