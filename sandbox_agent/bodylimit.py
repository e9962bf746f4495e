"""Caps request bodies: a JSON body larger than ``max_bytes`` is answered 413.

Pure ASGI, so it costs nothing per request beyond a header lookup. A declared
``Content-Length`` over the cap is refused before anything is read; a chunked
body is counted as it arrives. Paths under ``exempt`` (uploads, which stream
to disk and enforce their own, larger cap) pass untouched.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox_agent.errors import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = ("/upload/",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    response = error_response(413, f"request body larger than {self.max_bytes} bytes")
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)
