"""The fast lane for proxied routes (gateway.proxy_dispatch): it finds the same route as
FastAPI would, sets the same scope, and leaves everything else to FastAPI (404, 405,
redirects, the gateway's own routes under a conversation), with the same auth and errors."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from gw_helpers import ADMIN_KEY, USER_KEYS, Serve, auth, base_settings, keyed
from test_proxy import StandIn, StandInRuntime

from gateway.app import create_app
from gateway.proxy_dispatch import ProxyDispatch, install_proxy_dispatch
from gateway.routes.proxied import ProxyRoute
from gateway.routes.proxied import router as proxy_router

PROXIED = [route for route in proxy_router.routes if isinstance(route, ProxyRoute)]


def _scope(path: str, method: str = "GET", kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "method": method, "path": path, "root_path": "", "headers": []}


async def _never(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not reached")


def _sample(route: ProxyRoute, cid: uuid.UUID) -> str:
    values = {"path": "a/b.txt", "parent_path": "a"}
    return re.sub(r"{(\w+)(:\w+)?}", lambda found: values.get(found[1], str(cid)), route.path)


def test_every_proxied_route_is_found_with_its_parameters() -> None:
    dispatch = ProxyDispatch(_never, PROXIED)
    cid = uuid.uuid4()
    for route in PROXIED:
        for method in route.methods:
            scope = _scope(_sample(route, cid), method)
            assert dispatch.match(scope) is route, (route.path, method)
            assert scope["route"] is route and scope["endpoint"] is route.endpoint
            assert scope["path_params"]["conversation_id"] == str(cid)
    scope = _scope(f"/conversation/{cid}/file/dir/with%20space/x")
    scope["path"] = f"/conversation/{cid}/file/dir/with space/x"  # servers give the decoded path
    assert dispatch.match(scope) is not None and scope["path_params"]["path"] == "dir/with space/x"


@pytest.mark.parametrize(
    ("path", "method", "kind"),
    [
        ("/conversation/{cid}/nothing-here", "GET", "http"),  # unknown segment
        ("/conversation/{cid}/agent-info", "PUT", "http"),  # wrong method: FastAPI's 405
        ("/conversation/{cid}/agent-info/", "GET", "http"),  # trailing slash: FastAPI's redirect
        ("/conversation/{cid}/pause", "POST", "http"),  # the gateway's own route
        ("/conversation/{cid}", "GET", "http"),
        ("/conversation/{cid}/terminal/{cid}", "GET", "websocket"),
        ("/health", "GET", "http"),
    ],
)
def test_what_is_not_a_proxied_route_is_left_alone(path: str, method: str, kind: str) -> None:
    dispatch = ProxyDispatch(_never, PROXIED)
    scope = _scope(path.format(cid=uuid.uuid4()), method, kind)
    if kind == "http":
        assert dispatch.match(scope) is None
    assert "route" not in scope


def test_a_route_that_could_shadow_a_proxied_one_is_refused() -> None:
    app = FastAPI()
    other = APIRouter()

    @other.post("/conversation/{conversation_id}/task")
    async def mine(conversation_id: str) -> None: ...

    app.include_router(other)
    app.include_router(proxy_router)
    with pytest.raises(ValueError, match="task"):
        install_proxy_dispatch(app, PROXIED)


def test_the_gateway_dispatches_proxied_routes_itself(tmp_path: Any) -> None:
    app = create_app(base_settings(tmp_path))
    assert isinstance(app.router.middleware_stack, ProxyDispatch)
    # The routes stay declared: the OpenAPI document still has them.
    assert "/conversation/{conversation_id}/agent-info" in app.openapi()["paths"]


@pytest.fixture
async def gateway(serve: Serve, tmp_path: Any) -> Any:
    stand_in = StandIn()
    async with serve(stand_in.app()) as upstream:
        runtime = StandInRuntime(upstream, stand_in)
        app = create_app(base_settings(tmp_path, **keyed()), runtime)  # type: ignore[arg-type]
        async with serve(app) as url:
            yield url


async def test_errors_and_other_routes_answer_as_before(gateway: str) -> None:
    alice, bob = auth(USER_KEYS["alice"]), auth(USER_KEYS["bob"])
    async with httpx.AsyncClient(base_url=gateway) as client:
        cid = (await client.post("/conversation", json={}, headers=alice)).json()["id"]
        ok = await client.get(f"/conversation/{cid}/agent-info", headers=alice)
        assert ok.status_code == 200 and ok.json() == {"ok": True}

        anonymous = await client.get(f"/conversation/{cid}/agent-info")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        assert "API key" in anonymous.json()["detail"]
        others = await client.get(f"/conversation/{cid}/agent-info", headers=bob)
        unknown_id = await client.get(f"/conversation/{uuid.uuid4()}/agent-info", headers=alice)
        not_an_id = await client.get("/conversation/not-an-id/agent-info", headers=alice)
        for refused in (others, unknown_id, not_an_id):
            assert refused.status_code == 404 and "not found" in refused.json()["detail"]

        unknown_route = await client.get(f"/conversation/{cid}/nothing-here", headers=alice)
        assert unknown_route.status_code == 404 and unknown_route.json() == {"detail": "Not Found"}
        wrong_method = await client.put(f"/conversation/{cid}/agent-info", headers=alice)
        assert wrong_method.status_code == 405 and wrong_method.json() == {"detail": "Method Not Allowed"}
        # Not proxied: the gateway's own route under the conversation is FastAPI's, as before.
        usage = await client.get(f"/conversation/{cid}/usage", headers=bob)
        assert usage.status_code == 404 and usage.json()["detail"] == f"conversation {cid} not found"
        assert (await client.get("/openapi.json", headers=auth(ADMIN_KEY))).status_code == 200
