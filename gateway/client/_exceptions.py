"""Every exception the client raises, in one hierarchy rooted at :class:`ConvoyError`::

    ConvoyError                     anything that went wrong talking to a convoy gateway
    ├── BadRequest                  400, 413, 422 and any other 4xx: the input was refused
    │   └── Conflict                409: it exists already (overwrite=False), or the conversation ended
    ├── Unauthorized                401: no API key, or a wrong one (also WS close 4401)
    ├── Forbidden                   403: the key may not do this (also WS close 4403)
    ├── NotFound                    404: no such conversation, task, event or file (WS close 4404)
    ├── LimitReached                429: too many live conversations
    ├── GatewayUnavailable          unreachable, timed out, dropped, or 502/503/504
    ├── WebSocketClosed             a WebSocket closed under a send or a receive (``code``, ``reason``)
    ├── UnexpectedResponse          an answer the client cannot read (not JSON, not the model)
    ├── InvalidURL                  the gateway URL given to the client is not an http(s) URL
    ├── ConversationEnded           the event stream ended because the conversation did (WS 4410)
    ├── SandboxFailed               the sandbox failed to start or ended early (``reason``)
    └── TaskFailed                  a task did not exit 0 (``check=True``; ``exit_code``, ``status``)

Foreign exceptions (httpx's, websockets', OSError from sockets, pydantic's ValidationError
for a malformed answer) are mapped to these once, in :mod:`gateway.client._transport`; none
reaches a caller of the client. Errors of the caller's own machine (a local file that does not
exist, a disk that is full while downloading) stay what they are: ``OSError``.
"""

from __future__ import annotations

from typing import Any

from sandbox_agent.protocol import (
    WS_CLOSE_CONVERSATION_ENDED,
    WS_CLOSE_FORBIDDEN,
    WS_CLOSE_NOT_FOUND,
    WS_CLOSE_UNAUTHORIZED,
)


class ConvoyError(Exception):
    """Anything that went wrong talking to a convoy gateway.

    ``status_code`` is the HTTP status when there was one; ``detail`` is the
    server's ``detail`` field (a sentence or a list of field errors) when it sent one.
    """

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.detail = detail
        #: The request that failed (``"GET /conversation/..."``), when there was one.
        self.request = ""


class BadRequest(ConvoyError):
    """The gateway refused the input (400, 409, 413, 422): ``detail`` says what was wrong."""


class Conflict(BadRequest):
    """409: the thing exists already (for example an upload with ``overwrite=False``)."""


class Unauthorized(ConvoyError):
    """401: no API key, or a wrong one."""


class Forbidden(ConvoyError):
    """403: the key is valid but may not do this (an admin route, a path outside the workspace)."""


class NotFound(ConvoyError):
    """404: no such conversation (or not yours), task, event or file."""


class LimitReached(ConvoyError):
    """429: too many live conversations (globally or for this user)."""


class GatewayUnavailable(ConvoyError):
    """The gateway or the sandbox behind it could not be reached (connect errors, timeouts, 502/503/504)."""


class WebSocketClosed(ConvoyError):
    """A WebSocket was closed while sending or receiving on it. ``code`` is the close code
    (1006 when the connection dropped without one), ``reason`` the close reason."""

    def __init__(self, message: str, *, code: int | None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class UnexpectedResponse(ConvoyError):
    """The gateway answered something the client cannot read: not JSON, or not the expected model
    (a different convoy version, or something else listening at the URL)."""


class InvalidURL(ConvoyError):
    """The gateway URL is not an ``http://`` or ``https://`` URL with a host."""


class ConversationEnded(ConvoyError):
    """The server closed the stream because the conversation ended (deleted, reaped, failed)."""


class SandboxFailed(ConvoyError):
    """The conversation's sandbox failed to start or ended early; ``reason`` says why."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class TaskFailed(ConvoyError):
    """A task did not complete with exit code 0 (raised by ``check=True`` and ``TaskResult.check``)."""

    def __init__(self, message: str, *, exit_code: int | None, error: str | None, status: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.error = error
        self.status = status


def describe_detail(detail: Any) -> str:
    """One line from a ``detail`` body: a sentence as is, field errors as ``loc: msg; ...``."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if detail is None:
        return ""
    return str(detail)


_BY_STATUS: dict[int, type[ConvoyError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: BadRequest,
    429: LimitReached,
    502: GatewayUnavailable,
    503: GatewayUnavailable,
    504: GatewayUnavailable,
}

_FALLBACK_TEXT = {
    401: "missing or wrong API key",
    403: "not allowed",
    404: "not found",
    429: "limit reached",
}


def error_for_status(status_code: int, detail: Any, what: str = "") -> ConvoyError:
    """The exception for an HTTP error answer; ``what`` names the request (kept in ``.request``)."""
    kind = _BY_STATUS.get(status_code)
    if kind is None:
        kind = BadRequest if 400 <= status_code < 500 else ConvoyError
    text = describe_detail(detail) or _FALLBACK_TEXT.get(status_code, f"HTTP {status_code}")
    error = kind(text, status_code=status_code, detail=detail)
    error.request = what
    return error


#: WebSocket close codes after which reconnecting cannot help.
_BY_CLOSE_CODE: dict[int, type[ConvoyError]] = {
    WS_CLOSE_UNAUTHORIZED: Unauthorized,
    WS_CLOSE_FORBIDDEN: Forbidden,
    WS_CLOSE_NOT_FOUND: NotFound,
    WS_CLOSE_CONVERSATION_ENDED: ConversationEnded,
}


def error_for_close(code: int | None, reason: str, what: str = "") -> ConvoyError | None:
    """The exception for a WebSocket the server closed for good (refused, or the conversation
    ended); ``None`` for any other close (a dropped connection, "too slow"): reconnect."""
    kind = _BY_CLOSE_CODE.get(code) if code is not None else None
    if kind is None:
        return None
    error = kind(reason or f"the gateway closed the WebSocket ({code})")
    error.request = what
    return error
