"""A key in the WebSocket handshake's ``Sec-WebSocket-Protocol``, for browsers.

A browser cannot set headers on ``new WebSocket()``, and a key in the URL
(``?token=``) ends up in the access logs of whatever proxy sits in front of the
gateway. The one header a page may set is the list of subprotocols, so the
key travels there instead (the way Kubernetes takes bearer tokens)::

    new WebSocket(url, ["convoy", "convoy.key." + base64url(key)])

Contract:
- An offered subprotocol ``convoy.key.<base64url of the key, padding optional>``
  is a key, tried after ``Authorization`` and before ``?token=``
  (:meth:`gateway.auth.Authenticator.authenticate`). Like ``?token=`` it is
  an explicit credential, which another origin cannot know.
- A browser fails a handshake whose answer names no subprotocol when it
  offered some: :class:`SubprotocolAnswer` answers ``convoy`` for every socket
  that offered it, whichever route accepts it. The key entry is never echoed.
- The proxy never sends the caller's subprotocols upstream (the agent's
  sockets are opened by the gateway with the agent's own token).
"""

from __future__ import annotations

import base64
import binascii

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The subprotocol the gateway answers; offer it beside the key.
CONVOY_SUBPROTOCOL = "convoy"
#: The prefix of the subprotocol entry that carries the key (base64url, so any key is a valid token).
KEY_SUBPROTOCOL_PREFIX = "convoy.key."


def key_from_subprotocols(header: str | None) -> str | None:
    """The key in a ``Sec-WebSocket-Protocol`` header, ``None`` when there is none (or it is
    not valid base64url text)."""
    if not header:
        return None
    for entry in header.split(","):
        entry = entry.strip()
        if entry.startswith(KEY_SUBPROTOCOL_PREFIX):
            encoded = entry.removeprefix(KEY_SUBPROTOCOL_PREFIX)
            try:
                key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            return key or None
    return None


class SubprotocolAnswer:
    """ASGI middleware: a WebSocket that offered ``convoy`` is accepted with it (see module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or CONVOY_SUBPROTOCOL not in scope.get("subprotocols", ()):
            await self.app(scope, receive, send)
            return

        async def send_answering(message: Message) -> None:
            if message["type"] == "websocket.accept" and not message.get("subprotocol"):
                message = {**message, "subprotocol": CONVOY_SUBPROTOCOL}
            await send(message)

        await self.app(scope, receive, send_answering)
