"""How the agent's routes are declared: light records, with no web framework behind them.

A route module declares its routes on a :class:`Router` with the markers below,
in FastAPI's words (``Query``, ``Header``, ``Path``, ``Depends``, ``get``,
``post``, ``websocket``...), and two readers give them a meaning:

- :mod:`sandbox_agent.routes.serving` serves them with plain Starlette: what
  the agent's process runs, and all it imports;
- :mod:`sandbox_agent.routes.documented` turns them into FastAPI routes, for the
  OpenAPI documents (the agent's own and the gateway's, which re-declares the
  proxied routes from them), never imported on the serving path.

FastAPI alone (its OpenAPI models, its telemetry, its per-route dependants and
serializers) would cost every idle sandbox about 8 MiB: the reason for the split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
Responses = dict[int | str, dict[str, Any]]
#: A parameter with no default: the request must carry it.
REQUIRED: Any = ...


@dataclass(frozen=True)
class Param:
    """A parameter's source and constraints (``Query(...)`` and friends; see there)."""

    source: Literal["query", "header", "path"]
    default: Any = REQUIRED
    alias: str | None = None
    ge: int | None = None
    le: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class Dependency:
    """``Depends(call)``: the parameter is ``await call(request)``."""

    call: Callable[..., Any]


def Query(
    default: Any = REQUIRED,
    *,
    alias: str | None = None,
    ge: int | None = None,
    le: int | None = None,
    description: str | None = None,
) -> Any:
    return Param("query", default, alias, ge, le, description)


def Header(default: Any = REQUIRED, *, alias: str | None = None, description: str | None = None) -> Any:
    return Param("header", default, alias, description=description)


def Path(*, ge: int | None = None, le: int | None = None, description: str | None = None) -> Any:
    return Param("path", REQUIRED, ge=ge, le=le, description=description)


def Depends(call: Callable[..., Any]) -> Any:
    return Dependency(call)


@dataclass
class Route:
    """One declared route: FastAPI's ``add_api_route`` (or ``add_api_websocket_route``) arguments.

    ``options`` are the documentation's (``response_model``, ``status_code``,
    ``responses``, ``summary``, ``description``, ``openapi_extra``,
    ``response_class``, ``include_in_schema``); serving reads ``response_model``
    and ``status_code`` from them.
    """

    path: str
    endpoint: Callable[..., Any]
    methods: tuple[str, ...] = ()
    websocket: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.endpoint.__name__)


@dataclass
class Router:
    """The routes of one module. ``token``: every route wants the agent's token (401 without);
    ``tags`` and ``responses`` (documented errors) apply to each of its routes."""

    tags: list[str] = field(default_factory=list)
    token: bool = False
    responses: Responses = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)

    def add_api_route(
        self, path: str, endpoint: Callable[..., Any], *, methods: list[str], **options: Any
    ) -> None:
        self.routes.append(Route(path, endpoint, tuple(methods), options=options))

    def api_route(self, path: str, methods: list[str], **options: Any) -> Callable[[Endpoint], Endpoint]:
        def decorate(endpoint: Endpoint) -> Endpoint:
            self.add_api_route(path, endpoint, methods=methods, **options)
            return endpoint

        return decorate

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["GET"], **options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["POST"], **options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["DELETE"], **options)

    def put(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self.api_route(path, ["PUT"], **options)

    def websocket(self, path: str) -> Callable[[Endpoint], Endpoint]:
        def decorate(endpoint: Endpoint) -> Endpoint:
            self.routes.append(Route(path, endpoint, websocket=True))
            return endpoint

        return decorate
