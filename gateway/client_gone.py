"""``ClientGone``: the server tells an answer in progress that its client's connection was lost.

uvicorn tells an application of a lost client through ``receive()`` only (an
``http.disconnect``): an answer that streams would need a task of its own awaiting
it. The gateway's protocol (:class:`gateway.server.GuardedHttpProtocol`) offers each
request's scope a :class:`ClientGone` under :data:`CLIENT_GONE` instead: the answer
registers one callback, which the protocol calls once when the connection is lost
before the answer completed, and removes it when done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: The scope extension's key.
CLIENT_GONE = "convoy.client_gone"


class ClientGone:
    """One request's watch on its client's connection (see the module docstring)."""

    __slots__ = ("_callback",)

    def __init__(self) -> None:
        self._callback: Callable[[], None] | None = None

    def watch(self, callback: Callable[[], None] | None) -> None:
        """``callback`` is called once if the connection is lost meanwhile; ``None`` stops watching."""
        self._callback = callback

    def fire(self) -> None:
        """The connection was lost: the watcher (if any) hears of it, once."""
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def offer_client_gone(scope: Any) -> ClientGone:
    """Puts a new :class:`ClientGone` in ``scope``'s extensions and returns it."""
    gone = ClientGone()
    scope.setdefault("extensions", {})[CLIENT_GONE] = gone
    return gone
