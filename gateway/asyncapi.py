"""``GET /asyncapi.json``: an AsyncAPI 3.0 document of the three WebSocket channels.

Generated from the same models as the wire (:mod:`sandbox_agent.protocol`), so
it cannot drift from what is sent. Operations are from the gateway's point of
view: it *sends* events and *receives* task creations and event triggers.
pydantic's JSON Schema is adapted where AsyncAPI's Schema Object differs (a
``discriminator`` there is the property name, not an object).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway import __version__
from sandbox_agent.protocol import AFTER_SEQ_LIVE, WS_CLOSE_CODES, Event, EventTrigger, TaskCreate

#: The contract's table, keyed by the code as text (JSON object keys).
_CLOSE_CODES = {str(code): meaning for code, meaning in sorted(WS_CLOSE_CODES.items())}
_TOKEN = {"type": "string", "description": "API key, for browsers (or the convoy_key cookie)"}


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [
        (Event, "serialization"),
        (TaskCreate, "validation"),
        (EventTrigger, "validation"),
    ]
    _, document = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return dict(_asyncapi_schema(document.get("$defs", {})))


def _asyncapi_schema(node: Any) -> Any:
    """Adapts pydantic's JSON Schema to AsyncAPI's Schema Object, recursively."""
    if isinstance(node, list):
        return [_asyncapi_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    adapted = {key: _asyncapi_schema(value) for key, value in node.items()}
    discriminator = adapted.get("discriminator")
    if isinstance(discriminator, dict):
        adapted["discriminator"] = discriminator.get("propertyName", "type")
    return adapted


def _message(name: str, summary: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{name}"},
    }


def _query(properties: dict[str, Any]) -> dict[str, Any]:
    return {"ws": {"method": "GET", "query": {"type": "object", "properties": properties}}}


def _channel(address: str, description: str, query: dict[str, Any], inbound: bool) -> dict[str, Any]:
    messages: dict[str, Any] = {"event": {"$ref": "#/components/messages/Event"}}
    if inbound:
        messages["taskCreate"] = {"$ref": "#/components/messages/TaskCreate"}
        messages["eventTrigger"] = {"$ref": "#/components/messages/EventTrigger"}
    channel: dict[str, Any] = {
        "address": address,
        "description": description,
        "messages": messages,
        "bindings": _query({**query, "token": _TOKEN}),
    }
    if "{conversation_id}" in address:
        channel["parameters"] = {"conversation_id": {"description": "The conversation's UUID"}}
    return channel


def _operations(channel: str, inbound: bool) -> dict[str, Any]:
    operations: dict[str, Any] = {
        f"{channel}SendEvents": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": "Event envelopes: history after after_seq, then live; seq-0 frames are the "
            "gateway's own (STARTING phases, ERROR) or an Error for this client only.",
            "messages": [{"$ref": f"#/channels/{channel}/messages/event"}],
        }
    }
    if inbound:
        operations[f"{channel}ReceiveFrames"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": '{"runnable": ...} creates a task; {"detail": ...} triggers an event; anything '
            "else gets an Error frame.",
            "messages": [
                {"$ref": f"#/channels/{channel}/messages/taskCreate"},
                {"$ref": f"#/channels/{channel}/messages/eventTrigger"},
            ],
        }
    return operations


def asyncapi_document(host: str | None = None, secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document; ``host`` (``name:port``) adds a server entry."""
    after_seq = {
        "type": "integer",
        "minimum": AFTER_SEQ_LIVE,
        "default": 0,
        "description": "Events after this seq (0: all history; -1: live only)",
    }
    create_query = {
        "title": {"type": "string", "maxLength": 200},
        "idle_timeout": {"type": "number", "exclusiveMinimum": 0},
        "internet": {"type": "boolean"},
        "template": {"type": "string", "maxLength": 63, "description": "A template of GET /template"},
    }
    channels = {
        "conversation": _channel(
            "/conversation/{conversation_id}",
            "Follow one conversation and act in it.",
            {"after_seq": after_seq},
            True,
        ),
        "conversationCreate": _channel(
            "/conversation/",
            "Create a conversation and follow it: STARTING frames (seq 0, with the phase), then the "
            "conversation's events from seq 1, whose first is READY with the conversation_id.",
            create_query,
            True,
        ),
        "firehose": _channel(
            "/firehose/", "Admins: every event of every conversation, each once.", {}, False
        ),
    }
    operations: dict[str, Any] = {}
    for name, inbound in (("conversation", True), ("conversationCreate", True), ("firehose", False)):
        operations.update(_operations(name, inbound))
    document: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "convoy gateway WebSockets",
            "version": __version__,
            "description": "Close codes: "
            + "; ".join(f"{code} {meaning}" for code, meaning in _CLOSE_CODES.items()),
            "x-close-codes": _CLOSE_CODES,
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _schemas(),
            "messages": {
                "Event": _message("Event", "An event envelope"),
                "TaskCreate": _message("TaskCreate", "Create a task"),
                "EventTrigger": _message("EventTrigger", "Trigger a client event"),
            },
        },
    }
    if host:
        document["servers"] = {"gateway": {"host": host, "protocol": "wss" if secure else "ws"}}
    return document
