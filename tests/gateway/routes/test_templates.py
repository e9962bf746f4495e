"""The template routes on the memory runtime (its catalogue is a fake): list, build, use, remove."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from gw_helpers import ADMIN_KEY, Harness, auth, create_ready, keyed

from gateway.errors import RuntimeUnavailable
from gateway.runtimes.templates import Template
from tests.helpers import tar_of


async def build(client: httpx.AsyncClient, key: str | None = None, **query: Any) -> list[dict[str, Any]]:
    content = query.pop("content", None)
    response = await client.post("/template", params=query, content=content, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


async def names(client: httpx.AsyncClient, key: str | None = None) -> list[str]:
    response = await client.get("/template", headers=auth(key))
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["results"]]


async def test_the_default_template_is_always_listed(harness: Harness) -> None:
    async with harness.client() as client:
        listed = (await client.get("/template")).json()
    assert listed["next_page_id"] is None
    (default,) = listed["results"]
    assert default["name"] == "default" and default["pool"] is False


async def test_a_template_built_from_an_image_is_listed_and_runs_conversations(harness: Harness) -> None:
    async with harness.client() as client:
        lines = await build(client, name="node", description="Node 20", **{"from": "node:20"})
        assert lines[0] == {"type": "progress", "line": "FROM node:20"}
        assert lines[-1]["type"] == "done"
        assert lines[-1]["template"]["name"] == "node" and lines[-1]["template"]["built_from"] == "node:20"
        assert await names(client) == ["default", "node"]

        conversation = await create_ready(client, template="node")
        info = (await client.get(f"/conversation/{conversation}")).json()
        assert info["template"] == "node"
        agent = (await client.get(f"/conversation/{conversation}/agent-info")).json()
        assert agent["template"] == "node"

        plain = await create_ready(client)
        assert (await client.get(f"/conversation/{plain}")).json()["template"] == "default"


async def test_an_unknown_template_is_a_422_naming_the_known_ones(harness: Harness) -> None:
    async with harness.client() as client:
        await build(client, name="ci", **{"from": "debian:bookworm"})
        response = await client.post("/conversation", json={"template": "nope"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'nope'" in detail and "default" in detail and "ci" in detail


async def test_a_create_of_the_default_template_needs_no_template_listing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default is always there: a runtime that cannot list its templates still starts it."""

    async def unlisted() -> list[Template]:
        raise RuntimeUnavailable("the template catalogue does not answer")

    monkeypatch.setattr(harness.runtime, "templates", unlisted)
    async with harness.client() as client:
        conversation = await create_ready(client)
        assert (await client.get(f"/conversation/{conversation}")).json()["template"] == "default"
        named = await client.post("/conversation", json={"template": "ci"})
        assert named.status_code == 503, named.text


async def test_the_default_template_setting_picks_the_template_of_a_bare_create(harness: Harness) -> None:
    async with harness.client() as client:
        await build(client, name="ci", **{"from": "debian:bookworm"})
    async with harness.client(default_template="ci") as client:
        conversation = await create_ready(client)
        assert (await client.get(f"/conversation/{conversation}")).json()["template"] == "ci"


async def test_a_template_in_use_is_not_removed(harness: Harness) -> None:
    async with harness.client() as client:
        await build(client, name="busy", **{"from": "busybox"})
        conversation = await create_ready(client, template="busy")
        refused = await client.delete("/template/busy")
        assert refused.status_code == 409 and "in use" in refused.json()["detail"]
        assert await names(client) == ["default", "busy"]

        assert (await client.delete(f"/conversation/{conversation}")).status_code == 204
        assert (await client.delete("/template/busy")).status_code == 204
        assert await names(client) == ["default"]
        assert (await client.delete("/template/busy")).status_code == 404


async def test_a_dockerfile_build_streams_its_lines(harness: Harness) -> None:
    context = tar_of({"build/Dockerfile": "FROM debian:bookworm\n# a comment\nRUN echo hi\n"})
    async with harness.client() as client:
        lines = await build(client, name="deb", dockerfile="build/Dockerfile", content=context)
        assert [line["line"] for line in lines if line["type"] == "progress"] == [
            "FROM debian:bookworm",
            "RUN echo hi",
        ]
        assert lines[-1]["template"]["built_from"] == "Dockerfile"

        missing = await client.post(
            "/template", params={"name": "x", "dockerfile": "Dockerfile"}, content=context
        )
        assert missing.status_code == 422 and "Dockerfile" in missing.json()["detail"]


async def test_bad_builds_and_removals_are_clear_4xx(harness: Harness) -> None:
    async with harness.client() as client:
        for query, status, words in [
            ({"name": "Bad Name", "from": "x"}, 422, "not a template name"),
            ({"name": "default", "from": "x"}, 422, "not built"),
            ({"name": "both", "from": "x", "dockerfile": "Dockerfile"}, 422, "one of"),
            ({"name": "neither"}, 422, "one of"),
        ]:
            response = await client.post("/template", params=query)
            assert response.status_code == status, (query, response.text)
            assert words in response.json()["detail"]
        default = await client.delete("/template/default")
        assert default.status_code == 422
        assert (await client.delete("/template/nothing-here")).status_code == 404


async def test_users_list_templates_and_admins_build_them(harness: Harness) -> None:
    async with harness.client(**keyed()) as client:
        assert await names(client, "key-alice") == ["default"]
        refused = await client.post("/template", params={"name": "x", "from": "y"}, headers=auth("key-alice"))
        assert refused.status_code == 403
        assert (await client.delete("/template/x", headers=auth("key-alice"))).status_code == 403
        await build(client, ADMIN_KEY, name="x", **{"from": "y"})
        assert await names(client, "key-alice") == ["default", "x"]


async def test_the_process_runtime_has_the_default_template_only(process_harness: Harness) -> None:
    async with process_harness.client() as client:
        assert await names(client) == ["default"]
        response = await client.post("/template", params={"name": "x", "from": "debian"})
        assert response.status_code == 400 and "docker runtime" in response.json()["detail"]
        assert (await client.delete("/template/x")).status_code == 404
