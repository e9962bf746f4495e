"""The documents: /openapi.json covers every route with real schemas, documents each
proxied route exactly as the agent declares it, with function names as operationIds;
/asyncapi.json is valid against the official AsyncAPI 3.0.0 JSON Schema and lists the
contract's close codes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
from fastapi.routing import APIRoute
from gw_helpers import Harness, base_settings, create_ready
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from gateway import asyncapi, asyncapi_terminal
from gateway.app import create_app
from gateway.asyncapi import asyncapi_document
from gateway.routes.proxied import PREFIX
from sandbox_agent.app import create_app as create_agent_app
from sandbox_agent.protocol import WS_CLOSE_CODES, WS_CLOSE_LIMIT_REACHED
from sandbox_agent.routes.proxied import PREVIEW_ROUTER, PROXIED_ROUTERS
from sandbox_agent.settings import AgentSettings
from tests.helpers import eventually

DATA = Path(__file__).parent / "data"

SEED_ROUTES = {
    ("post", "/conversation"),
    ("get", "/conversation"),
    ("get", "/conversation-count"),
    ("get", "/conversation/{conversation_id}"),
    ("delete", "/conversation/{conversation_id}"),
    ("get", "/conversation/{conversation_id}/event"),
    ("post", "/conversation/{conversation_id}/event"),
    ("get", "/conversation/{conversation_id}/event/{event_id}"),
    ("get", "/conversation/{conversation_id}/task"),
    ("get", "/conversation/{conversation_id}/task/{task_id}"),
    ("post", "/conversation/{conversation_id}/task"),
    ("delete", "/conversation/{conversation_id}/task/{task_id}"),
    ("post", "/conversation/{conversation_id}/dir/{path}"),
    ("post", "/conversation/{conversation_id}/file/{path}"),
    ("post", "/conversation/{conversation_id}/upload/{parent_path}"),
    ("delete", "/conversation/{conversation_id}/file/{path}"),
    ("get", "/conversation/{conversation_id}/file-content/{path}"),
    ("get", "/conversation/{conversation_id}/file/{path}"),
    ("get", "/conversation/{conversation_id}/file-search"),
    ("get", "/conversation/{conversation_id}/file-count"),
    ("get", "/conversation/{conversation_id}/agent-info"),
    ("post", "/conversation/{conversation_id}/task/{task_id}/stdin"),
    ("post", "/conversation/{conversation_id}/terminal"),
    ("get", "/conversation/{conversation_id}/terminal"),
    ("get", "/conversation/{conversation_id}/terminal/{terminal_id}"),
    ("delete", "/conversation/{conversation_id}/terminal/{terminal_id}"),
}


def _response_schema(operation: dict[str, Any]) -> Any:
    for status in ("200", "201"):
        if status in operation["responses"]:
            return operation["responses"][status]["content"]["application/json"]["schema"]
    return None


async def test_openapi_covers_every_route_with_schemas(harness: Harness) -> None:
    async with harness.client() as client:
        document = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = document["paths"]
    declared = {(method, path) for path, item in paths.items() for method in item}
    assert declared >= SEED_ROUTES
    schemas = document["components"]["schemas"]
    assert {
        "Conversation",
        "ConversationCreate",
        "Event",
        "Task",
        "TaskCreate",
        "FileInfo",
        "AgentInfo",
    } <= set(schemas)
    assert set(json.dumps(schemas["TaskCreate"]).split('"')) >= {"Ticker", "Shell", "Python"}

    def operation(method: str, path: str) -> dict[str, Any]:
        found = paths[path][method]
        assert isinstance(found, dict)
        return found

    task_body = operation("post", "/conversation/{conversation_id}/task")["requestBody"]
    assert task_body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TaskCreate"}
    upload = operation("post", "/conversation/{conversation_id}/upload/{parent_path}")["requestBody"]
    assert "multipart/form-data" in upload["content"]
    assert _response_schema(operation("get", "/conversation/{conversation_id}/task/{task_id}")) == {
        "$ref": "#/components/schemas/Task"
    }
    assert "Page_Event_" in json.dumps(
        _response_schema(operation("get", "/conversation/{conversation_id}/event"))
    )
    # The agent's 422 may say what was wrong in a sentence (a bad cursor), not only as field errors.
    listing = operation("get", "/conversation/{conversation_id}/event")["responses"]
    assert listing["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    download = operation("get", "/conversation/{conversation_id}/file-content/{path}")["responses"]["200"]
    assert "application/octet-stream" in download["content"]
    stdin = operation("post", "/conversation/{conversation_id}/task/{task_id}/stdin")
    assert "application/octet-stream" in stdin["requestBody"]["content"]
    assert {"eof"} <= {parameter["name"] for parameter in stdin["parameters"]}
    assert "409" in stdin["responses"]
    assert _response_schema(operation("post", "/conversation/{conversation_id}/terminal")) == {
        "$ref": "#/components/schemas/Terminal"
    }


def _event_validator(document: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Validates against ``#/components/schemas/Event`` of an OpenAPI 3.1 document."""
    return jsonschema.Draft202012Validator({**document, "$ref": "#/components/schemas/Event"})


async def test_stored_events_match_the_published_event_schema(harness: Harness) -> None:
    """Every kind of stored event validates against /openapi.json's Event: exactly one
    branch of its detail's oneOf, client events included."""
    async with harness.client() as client:
        validator = _event_validator((await client.get("/openapi.json")).json())
        base = f"/conversation/{await create_ready(client)}"
        posted = await client.post(f"{base}/event", json={"detail": {"type": "note", "text": "hi"}})
        assert posted.status_code == 201, posted.text
        for runnable in ({"type": "Shell", "command": "echo out"}, {"type": "Ticker", "iterations": 1}):
            assert (await client.post(f"{base}/task", json={"runnable": runnable})).status_code == 201

        async def all_stored() -> list[dict[str, Any]] | None:
            events: list[dict[str, Any]] = (await client.get(f"{base}/event", params={"limit": 100})).json()[
                "results"
            ]
            finished = [e for e in events if e["detail"].get("status") == "COMPLETED"]
            return events if len(finished) == 2 else None

        events = await eventually(all_stored)
    kinds = {event["detail"]["type"] for event in events}
    assert kinds >= {"ConversationStatusUpdate", "note", "TaskStatusUpdate", "TaskOutput", "Tick"}
    for event in events:
        errors = [error.message for error in validator.iter_errors(event)]
        assert not errors, (event["detail"], errors[:3])
    # Not vacuous: a system type without its fields matches no branch.
    broken = dict(events[0], detail={"type": "Tick"})
    assert list(validator.iter_errors(broken))


def _asyncapi_validator() -> jsonschema.Draft7Validator:
    """The official AsyncAPI 3.0.0 definitions (see data/README.md), resolved by their $id."""
    bundle = json.loads((DATA / "asyncapi-3.0.0-definitions.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(schema, default_specification=DRAFT7)) for uri, schema in bundle.items()
    )
    root = bundle["http://asyncapi.com/definitions/3.0.0/asyncapi.json"]
    return jsonschema.Draft7Validator(root, registry=registry)


async def test_asyncapi_is_valid_asyncapi_3(harness: Harness) -> None:
    async with harness.client() as client:
        document = (await client.get("/asyncapi.json")).json()
    assert document["asyncapi"] == "3.0.0"
    assert {c["address"] for c in document["channels"].values()} == {
        "/conversation/{conversation_id}",
        "/conversation/",
        "/firehose/",
        "/conversation/{conversation_id}/port/{port}/{path}",
        "/conversation/{conversation_id}/terminal/{terminal_id}",
    }
    assert {"Event", "TaskCreate", "EventTrigger", "StdinFrame", "TerminalResize", "TerminalExit"} <= set(
        document["components"]["schemas"]
    )
    terminal = document["channels"]["terminal"]
    assert {"output", "input", "resize", "TerminalSkipped", "TerminalExit"} <= set(terminal["messages"])
    assert document["components"]["messages"]["TerminalOutput"]["contentType"] == "application/octet-stream"
    validator = _asyncapi_validator()
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # The validator is not vacuous: a broken document fails.
    broken = dict(document, channels={"x": {"address": 5}})
    assert list(validator.iter_errors(broken))


# --- the proxied routes: declared once, by the agent ------------------------------


def _documents(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The gateway's and the agent's OpenAPI documents (built, not served)."""
    gateway = create_app(base_settings(tmp_path / "gateway")).openapi()
    settings = AgentSettings(workspace=tmp_path / "workspace", state_dir=tmp_path / "state", token="t")
    return gateway, create_agent_app(settings).openapi()


def _resolved(node: Any, document: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` replaced by what it names (a cycle by its name)."""
    if isinstance(node, list):
        return [_resolved(item, document, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix("#/components/schemas/")
        if name in seen:
            return {"$cycle": name}
        return _resolved(document["components"]["schemas"][name], document, (*seen, name))
    return {key: _resolved(value, document, seen) for key, value in node.items()}


#: The gateway's own per-conversation routes (answered by the gateway, not the agent).
GATEWAY_ONLY = {
    ("post", "/port/{port}/link"),
    ("get", "/usage"),
    *(("post", f"/{verb}") for verb in ("pause", "resume", "fork", "snapshot")),
}


def _proxied_operations() -> set[tuple[str, str]]:
    """Every route of the agent's the gateway serves: the proxied ones and the previews."""
    return {
        (method.lower(), route.path_format)
        for router in (*PROXIED_ROUTERS, PREVIEW_ROUTER)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def test_the_gateway_documents_each_proxied_route_as_the_agent_declares_it(tmp_path: Path) -> None:
    gateway, agent = _documents(tmp_path)
    proxied = _proxied_operations()
    assert len(proxied) == 21 + 7 and ("post", "/status") not in proxied and ("get", "/ready") not in proxied
    assert {("get", "/port/{port}/{path}"), ("options", "/port/{port}/{path}")} <= proxied
    per_conversation = {
        (method, path.removeprefix(PREFIX))
        for path, item in gateway["paths"].items()
        if path.startswith(PREFIX + "/")
        for method in item
    }
    # Nothing more: the agent's gateway-only routes are not there.
    assert per_conversation == proxied | GATEWAY_ONLY
    for method, path in sorted(proxied):
        theirs = agent["paths"][path][method]
        ours = gateway["paths"][PREFIX + path][method]
        where = f"{method} {path}"
        conversation_id, *parameters = ours["parameters"]
        assert conversation_id["name"] == "conversation_id" and conversation_id["in"] == "path", where
        assert conversation_id["required"] is True, where
        assert _resolved(parameters, gateway) == _resolved(theirs.get("parameters", []), agent), where
        assert _resolved(ours.get("requestBody"), gateway) == _resolved(theirs.get("requestBody"), agent), (
            where
        )
        assert set(ours["responses"]) >= set(theirs["responses"]), where
        for status, answer in theirs["responses"].items():
            mine = ours["responses"][status]
            assert _resolved(mine.get("content"), gateway) == _resolved(answer.get("content"), agent), (
                where,
                status,
            )
        for key in ("summary", "description", "tags"):
            assert ours.get(key) == theirs.get(key), (where, key)
        assert {"401", "404", "502", "503", "504"} <= set(ours["responses"]), where


def test_the_comparison_is_not_vacuous(tmp_path: Path) -> None:
    gateway, agent = _documents(tmp_path)
    listing = gateway["paths"][PREFIX + "/event"]["get"]["parameters"]
    after_seq = next(p for p in listing if p["name"] == "after_seq")
    assert after_seq["schema"]["default"] == 0  # the agent's default, not a second declaration's
    search = gateway["paths"][PREFIX + "/file-search"]["get"]["parameters"]
    assert next(p for p in search if p["name"] == "path")["schema"]["default"] == ""
    # A changed schema behind a $ref is a difference.
    changed = json.loads(json.dumps(agent))
    changed["components"]["schemas"]["FileInfo"]["properties"]["size"]["type"] = "string"
    answer = agent["paths"]["/file/{path}"]["get"]["responses"]["200"]["content"]
    assert _resolved(answer, agent) != _resolved(answer, changed)


def _operation_ids(document: dict[str, Any]) -> list[str]:
    return [operation["operationId"] for item in document["paths"].values() for operation in item.values()]


def test_operation_ids_are_the_function_names_and_unique(tmp_path: Path) -> None:
    gateway, agent = _documents(tmp_path)
    for document in (gateway, agent):
        ids = _operation_ids(document)
        assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert {"create_conversation", "list_conversations", "get_conversation", "delete_conversation"} <= set(
        _operation_ids(gateway)
    )
    assert {"list_events", "create_task", "upload", "file_content", "agent_info"} <= set(
        _operation_ids(gateway)
    )
    assert {"list_events", "trigger_event", "report_status", "health"} <= set(_operation_ids(agent))
    assert gateway["paths"][PREFIX + "/event"]["get"]["operationId"] == "list_events"


def test_asyncapi_close_codes_are_the_contracts() -> None:
    document = asyncapi_document()
    assert document["info"]["x-close-codes"] == {str(code): text for code, text in WS_CLOSE_CODES.items()}
    assert str(WS_CLOSE_LIMIT_REACHED) in document["info"]["x-close-codes"]
    for module in (asyncapi, asyncapi_terminal):
        source = Path(module.__file__ or "").read_text()
        assert not re.findall(r"\b[14]\d{3}\b", source), "close codes are read from sandbox_agent.contract"
