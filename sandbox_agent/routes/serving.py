"""Declared routes (:mod:`sandbox_agent.routes.decl`) served by plain Starlette.

What a request gets is what FastAPI gave it with the same declarations (the
OpenAPI document describes both): path, query and header parameters and a JSON
body validated by pydantic, 422 with FastAPI's list of field errors (path,
query, header, then body; ``loc`` starting with where the value was), 400 for
a body that cannot be read, the token checked first (401), then the endpoint's
answer: a ``Response`` as it is, else its value serialized by the route's
``response_model`` with the route's ``status_code``.

A route's binding (its signature read, its parameters' validators built) is
made on its first request, not at start: an idle sandbox holds only what it served.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.message import Message
from functools import cache
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.routing import Route as StarletteRoute
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.websockets import WebSocket

from sandbox_agent.auth import require_token
from sandbox_agent.errors import RequestInvalid
from sandbox_agent.routes.decl import REQUIRED, Dependency, Param, Route, Router

_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
#: The order FastAPI reports errors in: by where the value was.
_SOURCES = ("path", "query", "header", "body")


@dataclass(frozen=True)
class _Binding:
    """How one endpoint parameter gets its value."""

    name: str
    source: str  # "request", "websocket", "depends", or one of _SOURCES
    key: str = ""
    default: Any = REQUIRED
    adapter: TypeAdapter[Any] | None = None
    many: bool = False
    call: Callable[..., Awaitable[Any]] | None = None


@cache
def _adapter(annotation: Any, ge: int | None = None, le: int | None = None) -> TypeAdapter[Any]:
    """One validator per (type, bounds), shared by every route that declares it."""
    if ge is None and le is None:
        return TypeAdapter(annotation)
    return TypeAdapter(Annotated[annotation, Field(ge=ge, le=le)])


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_list(arg) for arg in get_args(annotation) if arg is not type(None))
    return get_origin(annotation) is list


def _bind(name: str, annotation: Any, default: Any, path_names: set[str]) -> _Binding:
    if isinstance(annotation, type) and issubclass(annotation, HTTPConnection):
        return _Binding(name, "websocket" if issubclass(annotation, WebSocket) else "request")
    if isinstance(default, Dependency):
        return _Binding(name, "depends", call=default.call)
    marker = default if isinstance(default, Param) else None
    value = marker.default if marker else (REQUIRED if default is inspect.Parameter.empty else default)
    adapter = _adapter(annotation, marker.ge, marker.le) if marker else _adapter(annotation)
    if name in path_names:
        return _Binding(name, "path", name, REQUIRED, adapter)
    if marker is not None and marker.source == "header":
        return _Binding(name, "header", marker.alias or name.replace("_", "-"), value, adapter)
    if marker is None and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Binding(name, "body", "", value, adapter)
    key = marker.alias if marker and marker.alias else name
    return _Binding(name, "query", key, value, adapter, many=_is_list(annotation))


def bindings(endpoint: Callable[..., Any], path: str) -> list[_Binding]:
    """The bindings of ``endpoint``'s parameters, served at ``path``, in the order they are
    resolved: the connection and dependencies first, then by source (:data:`_SOURCES`)."""
    path_names = set(_PATH_PARAM.findall(path))
    signature = inspect.signature(endpoint, eval_str=True)
    bound = [
        _bind(parameter.name, parameter.annotation, parameter.default, path_names)
        for parameter in signature.parameters.values()
    ]
    return sorted(bound, key=lambda item: _SOURCES.index(item.source) if item.source in _SOURCES else -1)


def _is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def _body(request: Request) -> Any:
    """The body as FastAPI reads it: JSON when typed so (or untyped), else its bytes; None when empty."""
    raw = await request.body()
    if not raw:
        return None
    content_type = request.headers.get("content-type")
    if content_type and not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        detail = {"type": "json_invalid", "loc": ["body", error.pos], "msg": "JSON decode error"}
        raise RequestInvalid([{**detail, "input": {}, "ctx": {"error": error.msg}}]) from None
    except Exception:  # not UTF-8 (nor UTF-16, UTF-32), nested too deeply to decode: FastAPI's 400
        raise HTTPException(400, "There was an error parsing the body") from None


def _raw(binding: _Binding, connection: HTTPConnection) -> Any:
    if binding.source == "path":
        return connection.path_params.get(binding.key)
    if binding.source == "header":
        return connection.headers.get(binding.key)
    if binding.many:
        return connection.query_params.getlist(binding.key) or None
    return connection.query_params.get(binding.key)


def _validate(binding: _Binding, raw: Any, errors: list[dict[str, Any]]) -> Any:
    """``raw`` validated for ``binding``; a problem goes to ``errors`` (loc prefixed as FastAPI does)."""
    where = [binding.source] if binding.source == "body" else [binding.source, binding.key]
    if raw is None:
        if binding.default is REQUIRED:
            errors.append({"type": "missing", "loc": where, "msg": "Field required", "input": None})
        return binding.default
    assert binding.adapter is not None
    try:
        return binding.adapter.validate_python(raw, from_attributes=True)  # as FastAPI validates
    except ValidationError as error:
        for item in error.errors(include_url=False):
            errors.append({**item, "loc": [*where, *item["loc"]]})
        return None


async def _arguments(bound: list[_Binding], connection: HTTPConnection) -> dict[str, Any]:
    """The endpoint's keyword arguments, or :class:`RequestInvalid` with every field error."""
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for binding in bound:
        if binding.source in ("request", "websocket"):
            values[binding.name] = connection
        elif binding.call is not None:
            values[binding.name] = await binding.call(connection)
        elif binding.source == "body" and isinstance(connection, Request):
            values[binding.name] = _validate(binding, await _body(connection), errors)
        else:
            values[binding.name] = _validate(binding, _raw(binding, connection), errors)
    if errors:
        raise RequestInvalid(errors)
    return values


def _answer(route: Route, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    status = int(route.options.get("status_code") or 200)
    model = route.options.get("response_model")
    if model is None:
        return JSONResponse(result, status_code=status)
    return Response(_adapter(model).dump_json(result, by_alias=True), status, media_type="application/json")


def _http_route(route: Route, token: bool) -> StarletteRoute:
    bound: list[_Binding] = []

    async def handle(request: Request) -> Response:
        if token:
            await require_token(request)
        if not bound:
            bound.extend(bindings(route.endpoint, route.path))
        return _answer(route, await route.endpoint(**await _arguments(bound, request)))

    served = StarletteRoute(route.path, handle, methods=list(route.methods), name=route.name)
    served.methods = set(route.methods)  # as declared: Starlette would add HEAD to every GET
    return served


def _websocket_route(route: Route) -> WebSocketRoute:
    bound: list[_Binding] = []

    async def handle(websocket: WebSocket) -> None:
        if not bound:
            bound.extend(bindings(route.endpoint, route.path))
        try:
            arguments = await _arguments(bound, websocket)
        except RequestInvalid as error:
            names = ", ".join(str(item["loc"][-1]) for item in error.errors())
            await websocket.close(WS_1008_POLICY_VIOLATION, f"invalid {names}"[:120])
            return
        await route.endpoint(**arguments)

    return WebSocketRoute(route.path, handle, name=route.name)


def routes(routers: Iterable[Router]) -> list[BaseRoute]:
    """Starlette routes for ``routers``' declarations, in their order (the matching order)."""
    served: list[BaseRoute] = []
    for router in routers:
        for route in router.routes:
            served.append(_websocket_route(route) if route.websocket else _http_route(route, router.token))
    return served
