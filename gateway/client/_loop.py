"""A private event loop on a background thread, for the blocking client.

:meth:`BackgroundLoop.call` runs a coroutine there and blocks until it is done;
:meth:`BackgroundLoop.iterate` turns an async iterator into a plain one. Ctrl-C (or any
exception) in the waiting thread cancels the coroutine instead of leaving it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="convoy-client-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and answer its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the blocking client cannot be used from its own event loop")
        finished = threading.Event()

        async def runner() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(runner(), self._loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                # Let the cancellation run its cleanup (closing sockets) before going on.
                finished.wait(timeout=10)
            raise

    def iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        """``source`` as a blocking iterator; closing it early closes ``source`` on the loop."""
        iterator = source.__aiter__()
        try:
            while True:
                try:
                    item = self.call(_await(iterator.__anext__()))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None and self._loop.is_running():
                with contextlib.suppress(Exception):
                    self.call(_await(close()))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
