"""``WS /firehose/``: every event of every conversation, to every admin listening.

One upstream event stream per READY conversation, however many firehose
clients there are, and only while at least one is connected:

- when the first client connects, each READY conversation is followed live
  (``after_seq=-1``); a conversation that becomes READY later is followed from
  the start of its log (``after_seq=0``), so its READY event is included;
- each upstream text frame goes to every client as it is (the agent's envelope
  already names the conversation; nothing is parsed but the ``seq``, read
  cheaply to resume an upstream that broke off without duplicates);
- the gateway's own seq-0 status frames (STARTING phases, start-up ERROR) are
  sent too;
- a conversation resumed from PAUSED that was not followed is followed from its
  READY event on (the notice's ``resumed_after``);
- every client has a queue bounded in bytes (``firehose_queue_bytes``) and
  frames (``firehose_queue_size``); a client that lets it fill is closed with
  4008 (``WS_CLOSE_TOO_SLOW``), never slows the others, and what it held is
  freed at once (and given back to the system once it has gone);
- when the last client leaves, every upstream is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from uuid import UUID

import websockets
from starlette.websockets import WebSocket

from gateway.conversations import ConversationManager
from gateway.heap import give_back_soon
from gateway.runtimes.base import SandboxHandle
from gateway.sendqueue import SendQueue
from gateway.settings import Settings
from gateway.status import StatusBus, StatusNotice
from gateway.wsproxy import UpstreamUnavailable, close_client, connect_upstream
from sandbox_agent.protocol import AFTER_SEQ_LIVE, WS_CLOSE_GOING_AWAY, WS_CLOSE_TOO_SLOW, ConversationStatus
from sandbox_agent.race import race

log = logging.getLogger("convoy.gateway")

_MAX_RECONNECTS = 5


def seq_of(frame: str, default: int) -> int:
    """The ``seq`` of an event envelope, without parsing the whole frame."""
    at = frame.find('"seq":')
    if at < 0:
        return default
    end = at + 6
    while end < len(frame) and frame[end] == " ":
        end += 1
    start = end
    while end < len(frame) and frame[end].isdigit():
        end += 1
    return int(frame[start:end]) if end > start else default


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("firehose: %s failed", task.get_name(), exc_info=task.exception())


@dataclass(eq=False)
class _Client:
    websocket: WebSocket
    queue: SendQueue
    too_slow: asyncio.Event = field(default_factory=asyncio.Event)


class Firehose:
    def __init__(self, settings: Settings, manager: ConversationManager, bus: StatusBus) -> None:
        self._settings = settings
        self._manager = manager
        self._bus = bus
        self._clients: set[_Client] = set()
        self._upstreams: dict[UUID, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None

    # --- clients ----------------------------------------------------------------

    async def serve(self, websocket: WebSocket) -> None:
        """Feed one accepted client until it leaves, is too slow, or the gateway closes."""
        queue = SendQueue(self._settings.firehose_queue_bytes, self._settings.firehose_queue_size)
        client = _Client(websocket, queue)
        self._clients.add(client)
        if self._watcher is None:
            self._begin()
        try:
            await race(self._write(client), self._drain(websocket), client.too_slow.wait())
        finally:
            self._clients.discard(client)
            if not self._clients:
                await self._end()
        if client.too_slow.is_set():
            give_back_soon()  # what its queue held
            reason = "too slow: reconnect to resume"
            await close_client(websocket, WS_CLOSE_TOO_SLOW, reason, within=self._settings.ws_close_timeout)
            give_back_soon()
        else:
            await close_client(websocket, 1000)

    @staticmethod
    async def _write(client: _Client) -> None:
        send, queue = client.websocket.send, client.queue
        while (frame := await queue.get()) is not None:
            await send({"type": "websocket.send", "text": frame})

    @staticmethod
    async def _drain(websocket: WebSocket) -> None:
        """Reads (and ignores) what the client sends, until it disconnects."""
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    def _broadcast(self, frame: str) -> None:
        for client in self._clients:
            if not client.queue.offer(frame):
                client.too_slow.set()

    # --- upstreams --------------------------------------------------------------

    def _begin(self) -> None:
        # Subscribe before looking at who is READY, in the same step: no READY is missed.
        subscription = self._bus.subscribe()
        notices = subscription.__enter__()
        for record in self._manager.ready_records():
            assert record.handle is not None
            self._follow(record.handle, AFTER_SEQ_LIVE)
        self._watcher = asyncio.create_task(self._watch(subscription, notices), name="firehose watcher")
        self._watcher.add_done_callback(_report)

    async def _watch(
        self, subscription: contextlib.AbstractContextManager[object], notices: asyncio.Queue[StatusNotice]
    ) -> None:
        try:  # the subscription was entered by _begin
            while True:
                notice = await notices.get()
                if notice.status in (ConversationStatus.STARTING, ConversationStatus.ERROR):
                    self._broadcast(notice.frame())
                elif notice.status is ConversationStatus.READY and not notice.ended:
                    record = self._manager.lookup(notice.conversation_id)
                    if record is not None and record.handle is not None:
                        after = 0 if notice.fresh else AFTER_SEQ_LIVE
                        after = after if notice.resumed_after is None else notice.resumed_after
                        self._follow(record.handle, after)
        finally:
            subscription.__exit__(None, None, None)

    def _follow(self, handle: SandboxHandle, after_seq: int) -> None:
        if handle.conversation_id not in self._upstreams:
            task = asyncio.create_task(
                self._pump(handle, after_seq), name=f"firehose {handle.conversation_id}"
            )
            self._upstreams[handle.conversation_id] = task
            task.add_done_callback(lambda _: self._upstreams.pop(handle.conversation_id, None))
            task.add_done_callback(_report)

    async def _pump(self, handle: SandboxHandle, after_seq: int) -> None:
        """Forwards one conversation's events, resuming after the last seq seen when the
        stream breaks off while the conversation is still READY."""
        last = after_seq
        for attempt in range(_MAX_RECONNECTS + 1):
            try:
                upstream = await connect_upstream(handle, last, self._settings, passive=True)
            except UpstreamUnavailable as error:
                log.info("firehose: %s", error)
            else:
                try:
                    async for message in upstream:
                        frame = message if isinstance(message, str) else message.decode()
                        self._broadcast(frame)
                        last = seq_of(frame, last)
                except websockets.ConnectionClosed:
                    pass
                finally:
                    await upstream.close()
            record = self._manager.lookup(handle.conversation_id)
            if record is None or record.status is not ConversationStatus.READY:
                return
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        log.warning("firehose: gave up following %s", handle.conversation_id)

    async def _end(self) -> None:
        watcher, self._watcher = self._watcher, None
        tasks = [task for task in (watcher, *self._upstreams.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._upstreams.clear()

    async def close(self) -> None:
        """Closes every client (1001) and upstream: the gateway is stopping."""
        for client in list(self._clients):
            await close_client(client.websocket, WS_CLOSE_GOING_AWAY, "the gateway is stopping")
        await self._end()
