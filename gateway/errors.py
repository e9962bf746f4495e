"""The gateway's errors, in one tree, and how each answers: always JSON ``{"detail": ...}``.

::

    GatewayError                  an answer other than success; .status, .detail
    ├── InvalidInput        422   the request is wrong (the detail says how)
    ├── NotFound            404   no such conversation (or not yours: the same answer)
    ├── LinkRefused         403   a preview link that is not valid for this port, or expired
    ├── BodyTooLarge        413   a body a route bounds itself (a template's build context)
    ├── LimitReached        429   a global or per-owner maximum is reached
    ├── NotReady            409   the conversation ended (ERROR, STOPPING): it takes no requests
    ├── StillStarting       503   the conversation is still STARTING after the start timeout
    ├── ShuttingDown        503   the gateway is stopping
    ├── UpstreamUnreachable 502   the sandbox's agent does not answer
    ├── UpstreamTimeout     504   the sandbox's agent answers too slowly
    └── RuntimeFailure      500   raised below the Runtime seam (gateway/runtimes/)
        ├── SandboxStartError     500   the sandbox did not become ready; nothing of it is left
        ├── RuntimeUnavailable    503   the runtime's backend (Docker engine, ...) cannot be reached
        ├── EngineError           500   the Docker engine refused a call
        ├── LifecycleUnsupported  409   this runtime cannot pause, resume, snapshot or fork
        │   └── EngineNotFound    500   the container, volume or network does not exist
        └── TemplateError         422   templates (see Runtime.build_template)
            ├── InvalidTemplate         422   a malformed name, or the default's (which is not built)
            ├── TemplateBuildError      422   the image is not there, or the Dockerfile's build failed
            ├── TemplatesUnsupported    400   this runtime has the default template only
            ├── TemplateNotFound        404   no template of that name
            └── TemplateInUse           409   sandboxes run it: it is not removed

Runtimes raise only :class:`RuntimeFailure` subclasses: foreign errors
(aiodocker, aiohttp, OSError, httpx) are mapped once, where they arise
(``AiodockerEngine`` in :mod:`gateway.runtimes.docker_aiodocker`, the process and memory
runtimes). The :class:`~gateway.conversations.ConversationManager` turns them
into a conversation's ERROR reason; one that escapes to a handler still
answers JSON with its status. Handlers also turn any unexpected exception into
a JSON 500 (logged), so no answer is ever an HTML page or a bare text.

Not here yet (they still live beside their one use): ``gateway.auth.AuthError``
(401/403) and ``gateway.wsproxy.UpstreamUnavailable`` (an agent WebSocket that
cannot be opened).
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox_agent.encoding import safe_errors

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


class LinkRefused(GatewayError):
    """A signed preview link that does not open this port of this conversation, or expired."""

    status = 403


class BodyTooLarge(GatewayError):
    status = 413


class LimitReached(GatewayError):
    status = 429


class NotReady(GatewayError):
    """The conversation exists but has ended (ERROR, STOPPING): it will never take a request
    again, so this is a conflict with its state, not a passing unavailability."""

    status = 409


class StillStarting(GatewayError):
    """A request waited for a STARTING conversation as long as a start may take, in vain."""

    status = 503


class ShuttingDown(GatewayError):
    status = 503


class UpstreamUnreachable(GatewayError):
    status = 502


class UpstreamTimeout(GatewayError):
    status = 504


# --- below the Runtime seam -------------------------------------------------------


class RuntimeFailure(GatewayError):
    """Base of every error a runtime raises; ``str(error)`` says what failed."""


class SandboxStartError(RuntimeFailure):
    """The sandbox did not become ready. ``str(error)`` is the reason shown to the user
    (with the sandbox's last log lines where the runtime has them). Whatever was
    created has already been removed when this is raised."""


class RuntimeUnavailable(RuntimeFailure):
    """The runtime's backend (Docker engine, ...) cannot be reached."""

    status = 503


# The pool (gateway/pool.py): a spare that could not be claimed.
class ClaimFailed(RuntimeFailure):
    """A spare could not be claimed (its agent is gone, does not answer, or refused)."""


class SpareTaken(ClaimFailed):
    """The spare was claimed already (by another gateway of the installation): it is a
    conversation now, and must neither be removed nor claimed again."""


class EngineError(RuntimeFailure):
    """The Docker engine refused a call (the message says why)."""


class LifecycleUnsupported(RuntimeFailure):
    """This runtime cannot do that to a sandbox (one whose ``pauses`` is False cannot
    pause); the message says why."""

    status = 409


class EngineNotFound(EngineError):
    """The container, volume or network does not exist (the runtime handles it: a
    client never sees it as a 404)."""


class TemplateError(RuntimeFailure):
    """Templates: building, removing, naming one. ``str(error)`` says what was wrong."""

    status = 422


class InvalidTemplate(TemplateError):
    pass


class TemplateBuildError(TemplateError):
    pass


class TemplatesUnsupported(TemplateError):
    status = 400


class TemplateNotFound(TemplateError):
    status = 404


class TemplateInUse(TemplateError):
    status = 409


#: An absolute path of two or more segments (not part of a URL or a relative path).
_HOST_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"():,;<>\[\]{}]+/)+([^\s/'\"():,;<>\[\]{}]*)")


def public_reason(reason: str, state_dirs: tuple[str, ...] = ()) -> str:
    """``reason`` without the host's layout: the state directories (``state_dirs``)
    and every absolute path shortened to its last part (``.../python``)."""
    for folder in state_dirs:
        reason = reason.replace(folder, "...")
    return _HOST_PATH.sub(r".../\1", reason)


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
        # A field error repeats its input: it may be NaN, Infinity, or nested too deeply to encode.
        assert isinstance(error, RequestValidationError)
        return error_response(422, safe_errors(list(error.errors())))

    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal error in the gateway")

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
