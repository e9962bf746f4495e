"""Errors the agent answers with, and the handlers that give every error a ``{"detail": ...}`` body.

Domain code raises :class:`AgentError` subclasses (they carry their HTTP
status); the handlers installed by :func:`install` turn those, validation
errors, bad cursors and anything unexpected into JSON. Unexpected exceptions
are logged and answered 500 - bad input never reaches that path. Every body
is made JSON-safe first (:mod:`sandbox_agent.encoding`).

Storage: an event log or task record that cannot be written
(:class:`~sandbox_agent.journal.JournalUnwritable`) and any ``OSError`` of a
full disk or quota (ENOSPC, EDQUOT) answer 507 Insufficient Storage; a name
too long for the file system is 400, a permission the file system refuses 403.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from sandbox_agent.encoding import json_safe, safe_errors
from sandbox_agent.events import LogClosed, UnencodableEvent
from sandbox_agent.journal import JournalUnwritable
from sandbox_agent.paging import BadCursor
from sandbox_agent.protocol import RUNNABLE_TYPES

log = logging.getLogger(__name__)

KNOWN_RUNNABLES: list[str] = [str(model.model_fields["type"].default) for model in RUNNABLE_TYPES]


class RequestInvalid(Exception):
    """The request's parameters or body are not what the route declares: 422 with the
    field errors (FastAPI's ``RequestValidationError``, raised by sandbox_agent.routes.serving)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self._errors = errors

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


class AgentError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadPath(AgentError):
    """``..``, an absolute path, a NUL byte: refused before anything is touched."""

    status_code = 400


class PathEscapes(AgentError):
    """The path resolves (through a symlink) outside the workspace."""

    status_code = 403


class NotFound(AgentError):
    status_code = 404


class Conflict(AgentError):
    status_code = 409


class TooLarge(AgentError):
    status_code = 413


class Unprocessable(AgentError):
    status_code = 422


class LimitReached(AgentError):
    """A count the agent bounds (terminals running at once) is reached."""

    status_code = 429


class Forbidden(AgentError):
    """The file system refuses the operation (permissions, read-only)."""

    status_code = 403


class InsufficientStorage(AgentError):
    """The disk (or quota) is full: nothing was stored."""

    status_code = 507


class StorageFailed(AgentError):
    """The file system failed in a way the client cannot fix (an I/O error)."""

    status_code = 500


_STATUS_BY_ERRNO = {
    errno.ENOSPC: 507,
    errno.EDQUOT: 507,
    errno.ENAMETOOLONG: 400,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.EROFS: 403,
}
_ERROR_BY_STATUS: dict[int, type[AgentError]] = {
    507: InsufficientStorage,
    400: BadPath,
    403: Forbidden,
}


def is_disk_full(error: OSError) -> bool:
    return _STATUS_BY_ERRNO.get(error.errno or 0) == InsufficientStorage.status_code


def storage_error(error: OSError, what: str, consequence: str = "") -> AgentError:
    """An answer for ``error`` met while doing ``what`` (a phrase naming the file)."""
    reason = error.strerror or str(error)
    status = _STATUS_BY_ERRNO.get(error.errno or 0, 500)
    return _ERROR_BY_STATUS.get(status, StorageFailed)(f"{what} failed: {reason}{consequence}")


class Stopping(AgentError):
    """The agent is shutting down and takes no new work."""

    status_code = 503


# --- preview ports (sandbox_agent.ports) ------------------------------------------


class PortUnreachable(AgentError):
    """Nothing listens on the port inside the sandbox, or what does gave no valid answer."""

    status_code = 502


class PortTimeout(AgentError):
    """The server on the port inside the sandbox did not answer in time."""

    status_code = 504


def explain_validation(errors: list[Any]) -> list[Any]:
    """Field errors, JSON-safe; an unknown runnable type names the known ones."""
    result: list[Any] = []
    for error in safe_errors(errors):
        if isinstance(error, dict) and error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc = error.get("loc") or []
            if "runnable" in loc:
                error = {
                    **error,
                    "msg": f"unknown runnable type; known types: {', '.join(KNOWN_RUNNABLES)}",
                    "known_types": KNOWN_RUNNABLES,
                }
        result.append(error)
    return result


def error_response(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": json_safe(detail)}, status_code=status_code, headers=headers)


async def _agent_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentError)
    return error_response(exc.status_code, exc.detail)


async def _log_closed(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, "the agent is stopping")


async def _unencodable(request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, str(exc))


async def _bad_cursor(request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, str(exc))


def unwritable_detail(exc: JournalUnwritable) -> str:
    """What to tell a client whose event or task could not be recorded."""
    reason = "no space left on device" if is_disk_full(exc.error) else (exc.error.strerror or str(exc.error))
    return f"the event log cannot be written ({reason}): nothing was recorded; retry once space is freed"


async def _journal_unwritable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JournalUnwritable)
    return error_response(507, unwritable_detail(exc))


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OSError)
    if exc.errno in _STATUS_BY_ERRNO:
        return error_response(_STATUS_BY_ERRNO[exc.errno], exc.strerror or str(exc))
    return await _unexpected(request, exc)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestInvalid)
    return error_response(422, explain_validation(list(exc.errors())))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers) if exc.headers else None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


def install(app: Starlette) -> None:
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(BadCursor, _bad_cursor)
    app.add_exception_handler(LogClosed, _log_closed)
    app.add_exception_handler(UnencodableEvent, _unencodable)
    app.add_exception_handler(JournalUnwritable, _journal_unwritable)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(RequestInvalid, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
