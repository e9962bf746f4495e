"""The fake API server's HTTP face: the real REST paths, verbs and answers.

``/api/v1/namespaces/{ns}/{plural}[/{name}[/status]]`` and
``/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}[/status]]`` (and the
all-namespaces collections ``/api/v1/{plural}``...) take create (POST), get,
list and watch (GET), update (PUT), patch (PATCH; see :mod:`fake_kube.patches`),
delete and deletecollection (DELETE). Errors are ``Status`` objects with the
real codes and reasons. A bearer token is required (401 otherwise). Every
request is recorded as a :class:`Recorded` (its RBAC verb and resource) so a
test can check the runtime's RBAC rules cover what it does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fake_kube import discovery, patches, rbac
from fake_kube import status as errors
from fake_kube.resources import Resource, lookup
from fake_kube.selectors import SelectorError, field_selector, label_selector
from fake_kube.status import ApiError
from fake_kube.store import Obj, Store
from fake_kube.watch import WatchRequest, stream

# Kinds whose delete answers with the deleted object; the others answer with a Status.
_RETURNS_OBJECT = {"pods", "services"}


@dataclass(frozen=True)
class Recorded:
    """One request: ``verb`` as RBAC names it (get, list, watch, create, update, patch,
    delete, deletecollection), or the HTTP method for a discovery path."""

    verb: str
    path: str
    group: str
    resource: str
    namespace: str | None
    name: str | None
    subresource: str
    code: int


@dataclass(frozen=True)
class _Target:
    resource: Resource
    namespace: str | None
    name: str | None
    subresource: str


def _target(parts: list[str]) -> _Target | None:
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = lookup(group, version, rest[0])
    if resource is None or len(rest) > 3 or (namespace is None and len(rest) > 1):
        return None
    subresource = rest[2] if len(rest) == 3 else ""
    if subresource and (subresource != "status" or not resource.status_subresource):
        return None
    return _Target(resource, namespace, rest[1] if len(rest) >= 2 else None, subresource)


def _record(verb: str, path: str, target: _Target | None, code: int) -> Recorded:
    if target is None:
        return Recorded(verb, path, "", "", None, None, "", code)
    resource = target.resource
    return Recorded(
        verb, path, resource.group, resource.plural, target.namespace, target.name, target.subresource, code
    )


def _verb(method: str, target: _Target, watching: bool) -> str:
    if target.name is None:
        return {"GET": "watch" if watching else "list", "POST": "create", "DELETE": "deletecollection"}.get(
            method, method.lower()
        )
    return {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def _flag(value: str | None) -> bool:
    return value in ("true", "1", "True")


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (an empty body: ``{}``); 400 for anything else."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as error:
        raise errors.bad_request(f"the request body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise errors.bad_request("the request body is not a JSON object")
    return body


class ApiServer:
    """The ASGI app over ``store``; ``token`` is the only bearer token accepted."""

    def __init__(self, store: Store, token: str, address: Callable[[], str]) -> None:
        self.store, self.token, self._address = store, token, address
        self.requests: list[Recorded] = []
        self.require_token = True
        # The rules of the Role the client is bound to; None: everything is allowed.
        self.rules: list[dict[str, Any]] | None = None
        self.user = "system:serviceaccount:convoy:convoy-gateway"
        self.bookmark_interval = 1.0
        self.stopping = False
        # While True every watch ends (open ones after their current event, new ones at once,
        # without an event), as when the API server restarts.
        self.watches_down = False
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    async def _handle(self, request: Request) -> Response:
        parts = [part for part in request.url.path.split("/") if part]
        target = _target(parts)
        watching = _flag(request.query_params.get("watch"))
        verb = request.method if target is None else _verb(request.method, target, watching)
        try:
            if self.require_token and request.headers.get("authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if request.query_params.get("dryRun"):
                raise errors.bad_request("dryRun is not supported by the fake API server")
            if target is not None and self.rules is not None:
                self._authorize(_record(verb, request.url.path, target, 0))
            response = await (
                self._discovery(request, parts) if target is None else self._resource(request, target, verb)
            )
        except ApiError as error:
            response = JSONResponse(error.status(), error.code)
        except (AttributeError, TypeError, KeyError, ValueError) as error:
            # An object of the wrong shape (a string for metadata...): decoding it fails on a real
            # server too, with a 400.
            response = JSONResponse(errors.bad_request(f"the object is malformed: {error!r}").status(), 400)
        self.requests.append(_record(verb, request.url.path, target, response.status_code))
        return response

    def _authorize(self, request: Recorded) -> None:
        assert self.rules is not None
        if not rbac.allows(self.rules, request):
            resource = (
                f"{request.resource}/{request.subresource}" if request.subresource else request.resource
            )
            where = (
                f' in the namespace "{request.namespace}"' if request.namespace else " at the cluster scope"
            )
            raise ApiError(
                403,
                "Forbidden",
                f'{resource}{"." + request.group if request.group else ""} is forbidden: User "{self.user}" '
                f'cannot {request.verb} resource "{resource}" in API group "{request.group}"{where}',
                {"kind": request.resource, "group": request.group, "name": request.name or ""},
            )

    async def _discovery(self, request: Request, parts: list[str]) -> Response:
        found: dict[str, Any] | None = None
        if request.method == "GET":
            if parts == ["version"]:
                found = discovery.SERVER_VERSION
            elif parts == ["api"]:
                found = discovery.api_versions(self._address())
            elif parts == ["apis"]:
                found = discovery.api_groups()
            elif len(parts) == 2 and parts[0] == "apis":
                found = discovery.api_group(parts[1])
            elif parts == ["api", "v1"]:
                found = discovery.resource_list("", "v1")
            elif len(parts) == 3 and parts[0] == "apis":
                found = discovery.resource_list(parts[1], parts[2])
        if found is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return JSONResponse(found)

    async def _resource(self, request: Request, target: _Target, verb: str) -> Response:
        resource, namespace, name = target.resource, target.namespace, target.name
        if namespace is None and verb not in ("list", "watch"):
            raise ApiError(405, "MethodNotAllowed", f"{verb} needs a namespace")
        if verb in ("list", "watch", "deletecollection"):
            return self._collection(request, target, verb)
        assert namespace is not None
        if verb == "create":
            if target.name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST to a named object")
            return JSONResponse(self.store.create(resource, namespace, await _body(request)), 201)
        assert name is not None
        if verb == "get":
            return JSONResponse(self.store.get(resource, namespace, name))
        if verb == "update":
            body = await _body(request)
            if body.get("metadata", {}).get("name", name) != name:
                raise errors.bad_request("the name of the object does not match the name on the URL")
            return JSONResponse(self.store.update(resource, namespace, name, body, target.subresource))
        if verb == "patch":
            return self._patch(target, await request.body(), request.headers.get("content-type", ""))
        if verb == "delete":
            query = request.query_params
            return self._delete(
                target, await _body(request), query.get("propagationPolicy"), query.get("gracePeriodSeconds")
            )
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here")

    def _selection(self, request: Request) -> Callable[[Obj], bool]:
        try:
            labels = label_selector(request.query_params.get("labelSelector"))
            fields = field_selector(request.query_params.get("fieldSelector"))
        except SelectorError as error:
            raise errors.bad_request(str(error)) from error
        return lambda obj: labels(obj) and fields(obj)

    def _collection(self, request: Request, target: _Target, verb: str) -> Response:
        match = self._selection(request)
        resource, namespace = target.resource, target.namespace
        if verb == "watch":
            timeout = request.query_params.get("timeoutSeconds")
            version = request.query_params.get("resourceVersion")
            if not (timeout or "0").isdigit() or not (version or "0").isdigit():
                raise errors.bad_request("timeoutSeconds and resourceVersion must be whole numbers")
            watch = WatchRequest(
                resource,
                namespace,
                match,
                request.query_params.get("resourceVersion"),
                float(timeout) if timeout else None,
                _flag(request.query_params.get("allowWatchBookmarks")),
            )
            body = stream(
                self.store, watch, lambda: self.stopping or self.watches_down, self.bookmark_interval
            )
            return StreamingResponse(body, media_type="application/json")
        items = self.store.select(resource, namespace, match)
        version = str(self.store.version)
        if verb == "deletecollection":
            assert namespace is not None
            for item in items:
                self.store.delete(resource, namespace, item["metadata"]["name"])
        return JSONResponse(
            {
                "kind": f"{resource.kind}List",
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": version},
                "items": items,
            }
        )

    def _patch(self, target: _Target, body: bytes, content_type: str) -> Response:
        assert target.namespace is not None and target.name is not None
        resource = target.resource
        current = self.store.find(resource, target.namespace, target.name)
        if current is None:
            if not content_type.startswith(patches.APPLY):
                raise errors.not_found(resource, target.name)
            created = patches.apply(content_type, {}, body, resource.custom)
            return JSONResponse(self.store.create(resource, target.namespace, created), 201)
        try:
            patched = patches.apply(content_type, current, body, resource.custom)
        except patches.UnsupportedPatch as error:
            raise ApiError(415, "UnsupportedMediaType", str(error)) from error
        except patches.PatchError as error:
            raise ApiError(422, "Invalid", str(error)) from error
        # A patch need not carry a resourceVersion; one it carries must still be current.
        if patched.get("metadata", {}).get("resourceVersion") == current["metadata"]["resourceVersion"]:
            patched["metadata"].pop("resourceVersion", None)
        return JSONResponse(
            self.store.update(resource, target.namespace, target.name, patched, target.subresource)
        )

    def _delete(
        self, target: _Target, options: Any, propagation: str | None, grace_query: str | None
    ) -> Response:
        assert target.namespace is not None and target.name is not None
        policy = propagation or (options or {}).get("propagationPolicy") or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise errors.bad_request(f"unknown propagationPolicy {policy!r}")
        grace = (options or {}).get("gracePeriodSeconds", grace_query)
        deleted = self.store.delete(
            target.resource, target.namespace, target.name, policy, None if grace is None else int(grace)
        )
        if target.resource.plural in _RETURNS_OBJECT or target.resource.custom:
            return JSONResponse(deleted)
        return JSONResponse(errors.success(target.resource, deleted))
