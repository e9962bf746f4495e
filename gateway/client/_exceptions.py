"""The client's exceptions: one small hierarchy, everything derives from :class:`ConvoyError`.

HTTP answers and transport failures are turned into these in exactly one place
(:func:`error_from_response`, :func:`error_from_transport`); no httpx or websockets
exception ever reaches a caller of the client.
"""

from __future__ import annotations

from typing import Any


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
