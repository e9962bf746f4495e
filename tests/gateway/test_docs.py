"""The documents: /openapi.json covers every route with real schemas; /asyncapi.json
is valid against the official AsyncAPI 3.0.0 JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from gw_helpers import Harness, create_ready
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

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
    }
    assert {"Event", "TaskCreate", "EventTrigger"} <= set(document["components"]["schemas"])
    validator = _asyncapi_validator()
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    # The validator is not vacuous: a broken document fails.
    broken = dict(document, channels={"x": {"address": 5}})
    assert list(validator.iter_errors(broken))
