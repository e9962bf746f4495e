"""Giving memory back to the system after large buffers are freed.

Frames of a megabyte, queued for slow clients and then freed, leave glibc's
heap holding free pages the process keeps as resident memory (its dynamic mmap
threshold rises after the first large free, so later large buffers come from the
heap too). :func:`give_back_soon` asks glibc to return free pages
(``malloc_trim(0)``), once, a moment after the last call: call it when a client
whose buffers were large has gone. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import weakref
from collections.abc import Callable

log = logging.getLogger("convoy.gateway")

#: Seconds between the call and the trim: the sockets closing together are trimmed once.
TRIM_DELAY = 0.5


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()
_pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def trim_now() -> bool:
    """Return free heap pages to the system now (blocking: from a thread); ``True`` when possible."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


def give_back_soon() -> None:
    """Schedule one trim on the running loop in :data:`TRIM_DELAY` seconds (if none is pending)."""
    if _malloc_trim is None:
        return
    loop = asyncio.get_running_loop()
    pending = _pending.get(loop)
    if pending is not None and not pending.done():
        return
    _pending[loop] = loop.create_task(_trim_later(), name="give memory back")


async def _trim_later() -> None:
    await asyncio.sleep(TRIM_DELAY)
    try:
        await asyncio.to_thread(trim_now)
    except RuntimeError:  # the loop's executor is shutting down
        log.debug("memory trim skipped: shutting down")
