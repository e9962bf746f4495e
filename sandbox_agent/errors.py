"""Errors the agent answers with, and the handlers that give every error a ``{"detail": ...}`` body.

Domain code raises :class:`AgentError` subclasses (they carry their HTTP
status); the handlers installed by :func:`install` turn those, validation
errors, bad cursors and anything unexpected into JSON. Unexpected exceptions
are logged and answered 500 - bad input never reaches that path.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox_agent.events import LogClosed, UnencodableEvent
from sandbox_agent.paging import BadCursor
from sandbox_agent.protocol import RUNNABLE_TYPES

log = logging.getLogger(__name__)

KNOWN_RUNNABLES: list[str] = [str(model.model_fields["type"].default) for model in RUNNABLE_TYPES]


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


class Stopping(AgentError):
    """The agent is shutting down and takes no new work."""

    status_code = 503


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry replaced: non-finite floats become None, lone
    surrogates (valid in a JSON escape, not in UTF-8) are backslash-escaped."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def explain_validation(errors: list[Any]) -> list[Any]:
    """Field errors, JSON-safe; an unknown runnable type names the known ones."""
    result: list[Any] = []
    for error in json_safe(jsonable_encoder(errors)):
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


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, explain_validation(list(exc.errors())))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, exc.detail, dict(exc.headers) if exc.headers else None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(AgentError, _agent_error)
    app.add_exception_handler(BadCursor, _bad_cursor)
    app.add_exception_handler(LogClosed, _log_closed)
    app.add_exception_handler(UnencodableEvent, _unencodable)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
