"""Request ids and structured logs (``CONVOY_LOG_FORMAT=json``).

- Every HTTP answer carries ``X-Request-Id``: the caller's own when it sent a
  sane one (:data:`_SANE_ID`: up to 128 letters, digits and ``._:-``), else a new
  one. While the request is served, :data:`request_id` holds it, so every log
  line written meanwhile names it.
- With ``log_format="json"`` every log record is one JSON object per line
  (:class:`JsonLines`), and each request adds one ``convoy.access`` line:
  request id, method, route template (never the raw path: ids and file names
  stay out), status, duration, and the principal's name. Keys and tokens are never
  logged: the principal is a name, the query is not logged, and every line goes
  through :class:`gateway.server.RedactTokens` as in the text format.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import Authenticator, AuthError, Principal
from gateway.metrics_http import route_template

HEADER = "X-Request-Id"
_HEADER = HEADER.lower().encode()
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

#: The id of the request being served (``None`` outside one).
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("convoy_request_id", default=None)

access_log = logging.getLogger("convoy.access")

#: Record attributes a JSON line carries when a record has them (``extra=``).
_FIELDS = ("request_id", "method", "route", "status", "duration_ms", "principal")


#: New ids: this process's random prefix and a counter (32 hex digits, unique across
#: gateways without a system call per request).
_PREFIX = secrets.token_hex(8)
_NEXT = itertools.count(1)


def incoming_id(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` when it is sane, else a new one."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == _HEADER and _SANE_ID.fullmatch(value):
            return value.decode()
    return f"{_PREFIX}{next(_NEXT):016x}"


class RequestLog:
    """Gives each HTTP request its id (header and context) and, when ``log_requests``,
    one ``convoy.access`` line once answered."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, log_requests: bool) -> None:
        self.app = app
        self.authenticator = authenticator
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = incoming_id(scope)
        token = request_id.set(rid)
        began = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (_HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.log_requests:
                log_access(self.authenticator, scope, rid, status, time.perf_counter() - began)
            request_id.reset(token)


def log_access(
    authenticator: Authenticator,
    scope: Scope,
    rid: str,
    status: int,
    seconds: float,
    known: Principal | None = None,
) -> None:
    """The ``convoy.access`` line of one answered HTTP request (see the module docstring).
    ``known``: its caller when already authenticated (else authenticated here, for the name)."""
    principal: str | None
    if known is not None:
        principal = known.name
    else:
        try:
            principal = authenticator.authenticate(HTTPConnection(scope)).name
        except AuthError:
            principal = None
    route = route_template(scope)
    fields = {
        "request_id": rid,
        "method": scope["method"],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "principal": principal,
    }
    access_log.info("%s %s %d", scope["method"], route, status, extra=fields)


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the request id in
    force, the access fields when present, and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid is not None:
            line["request_id"] = rid
        for name in _FIELDS[1:]:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
