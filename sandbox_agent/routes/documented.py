"""The declared routes (:mod:`sandbox_agent.routes.decl`) as FastAPI routes: for documents only.

FastAPI reads the declarations to write the OpenAPI documents: the agent's own
(:func:`openapi_document`, built on the first ``GET /openapi.json``) and the
gateway's, which re-declares the proxied routes (:mod:`gateway.routes.proxied`
reads :func:`api_router`'s routes as it read the agent's own FastAPI routers).
Nothing here is imported while the agent serves; its requests never reach these
routes (:mod:`sandbox_agent.routes.serving` serves them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, params
from fastapi import Depends as FastAPIDepends
from fastapi import Header as FastAPIHeader
from fastapi import Path as FastAPIPath
from fastapi import Query as FastAPIQuery

from sandbox_agent.auth import require_token
from sandbox_agent.routes import operation_id
from sandbox_agent.routes import params as declared_params
from sandbox_agent.routes.decl import Dependency, Param, Router

_BUILT: dict[int, APIRouter] = {}


def fastapi_param(marker: Param) -> params.Param:
    """FastAPI's ``Query``/``Header``/``Path`` for ``marker``, with the same arguments."""
    given: dict[str, Any] = {
        "alias": marker.alias,
        "ge": marker.ge,
        "le": marker.le,
        "description": marker.description,
    }
    kwargs: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if marker.source == "path":
        result: params.Param = FastAPIPath(**kwargs)
    elif marker.source == "header":
        result = FastAPIHeader(marker.default, **kwargs)
    else:
        result = FastAPIQuery(marker.default, **kwargs)
    return result


#: The shared paging parameters, for the gateway's own routes (sandbox_agent.routes.params).
PageId: Any = fastapi_param(declared_params.PageId)
Limit: Any = fastapi_param(declared_params.Limit)


def _fastapi_default(default: Any) -> Any:
    if isinstance(default, Param):
        return fastapi_param(default)
    if isinstance(default, Dependency):
        return FastAPIDepends(default.call)
    return default


def endpoint_for_fastapi(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` with FastAPI's markers in its signature (annotations evaluated where it was
    written), its name and docstring: what FastAPI documents, and calls as the endpoint itself."""
    signature = inspect.signature(endpoint, eval_str=True)
    parameters = [
        parameter.replace(default=_fastapi_default(parameter.default))
        for parameter in signature.parameters.values()
    ]

    async def declared(**kwargs: Any) -> Any:
        return await endpoint(**kwargs)

    declared.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    declared.__name__ = declared.__qualname__ = endpoint.__name__
    declared.__doc__ = endpoint.__doc__
    declared.__module__ = endpoint.__module__
    return declared


def api_router(router: Router) -> APIRouter:
    """The FastAPI router of ``router``'s declarations (built once per router)."""
    if id(router) in _BUILT:
        return _BUILT[id(router)]
    built = APIRouter(
        tags=list(router.tags),
        dependencies=[FastAPIDepends(require_token)] if router.token else None,
        responses=dict(router.responses),
        generate_unique_id_function=operation_id,
    )
    for route in router.routes:
        if route.websocket:
            built.add_api_websocket_route(route.path, endpoint_for_fastapi(route.endpoint), name=route.name)
        else:
            built.add_api_route(
                route.path, endpoint_for_fastapi(route.endpoint), methods=list(route.methods), **route.options
            )
    _BUILT[id(router)] = built
    return built


def openapi_document(routers: Iterable[Router], title: str, version: str) -> dict[str, Any]:
    """The OpenAPI document of ``routers``, as FastAPI writes it."""
    app = FastAPI(
        title=title,
        version=version,
        routes=[route for router in routers for route in api_router(router).routes],
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    document: dict[str, Any] = app.openapi()
    return document
