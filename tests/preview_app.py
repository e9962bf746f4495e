"""A server to run inside a sandbox for the preview tests (as a Python task, or in-process).

``python preview_app.py PORT`` serves on 127.0.0.1:PORT (uvicorn, which the sandbox's
Python has: the agent runs on it), HTTP and WebSocket on one port:

- ``GET /headers/...``: JSON ``{"method", "path", "query", "headers": [[name, value], ...]}``
  of the request as it arrived;
- ``POST /count``: reads the body as it streams and answers ``{"bytes", "sha256"}``;
- ``GET /big?mib=N``: N MiB (a repeating pattern), streamed, without a length;
- ``GET /cookies``: sets ``app=1`` and the cookies a preview must never let through
  (``convoy_key``, ``convoy_preview``);
- ``WS /ws``: echoes every frame (text as text, bytes as bytes), choosing the first
  subprotocol offered.

As a Python task's ``code`` (this file's text, :func:`source`), ``sys.argv`` is empty:
the port comes from the environment ``PREVIEW_PORT`` then.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

PATTERN = bytes(range(256)) * 4096  # 1 MiB


def source() -> str:
    """This file's text (for a Python task's ``code``)."""
    return Path(__file__).read_text()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await _echo(scope, receive, send)
        return
    path: str = scope["path"]
    if path == "/count":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body"):
                break
        await _json(send, {"bytes": size, "sha256": digest.hexdigest()})
    elif path == "/big":
        mib = int(dict(_query(scope)).get("mib", "1"))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x/bytes")]})
        for _ in range(mib):
            await send({"type": "http.response.body", "body": PATTERN, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/cookies":
        cookies = [b"app=1; Path=/", b"convoy_key=evil; Path=/", b"convoy_preview=evil; Path=/"]
        await _json(send, {"set": len(cookies)}, [(b"set-cookie", c) for c in cookies])
    else:
        headers = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        query = scope["query_string"].decode("latin-1")
        await _json(send, {"method": scope["method"], "path": path, "query": query, "headers": headers})


def _query(scope: dict[str, Any]) -> list[tuple[str, str]]:
    text = scope["query_string"].decode()
    return [tuple(part.split("=", 1)) for part in text.split("&") if "=" in part]  # type: ignore[misc]


async def _json(send: Any, body: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = json.dumps(body).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": start + (headers or [])})
    await send({"type": "http.response.body", "body": raw})


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    offered = scope.get("subprotocols") or []
    await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


if __name__ == "__main__":
    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["PREVIEW_PORT"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=32 * 1024 * 1024)
