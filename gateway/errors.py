"""The gateway's own errors and how they answer: always JSON ``{"detail": ...}``.

Handlers also turn any unexpected exception into a JSON 500 (logged), so no
answer is ever an HTML page or a bare text.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox_agent.errors import json_safe

log = logging.getLogger("convoy.gateway")


class GatewayError(Exception):
    """An answer other than success; ``status`` is its HTTP status."""

    status = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(GatewayError):
    status = 422


class NotFound(GatewayError):
    status = 404


class LimitReached(GatewayError):
    status = 429


class NotReady(GatewayError):
    """The conversation exists but its sandbox cannot take requests (STARTING, STOPPING, ERROR)."""

    status = 503


class ShuttingDown(GatewayError):
    status = 503


class UpstreamUnreachable(GatewayError):
    status = 502


class UpstreamTimeout(GatewayError):
    status = 504


def error_response(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, GatewayError)
        return error_response(error.status, error.detail)

    async def http_error(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        return error_response(error.status_code, error.detail, dict(error.headers or {}))

    async def invalid(_: Request, error: Exception) -> JSONResponse:
        # JSON-safe: a field error repeats its input, which may be NaN or Infinity.
        assert isinstance(error, RequestValidationError)
        return error_response(422, json_safe(jsonable_encoder(error.errors())))

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal error in the gateway")

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
