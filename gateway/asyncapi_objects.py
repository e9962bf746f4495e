"""The pieces every channel of the AsyncAPI document (:mod:`gateway.asyncapi`) is made of:
a message of a schema, and the WebSocket binding (its query and the key's subprotocol)."""

from __future__ import annotations

from typing import Any

__all__ = ["TOKEN", "message", "ws_binding"]

#: The key in the query (``?token=``), the way for clients that cannot set a subprotocol.
TOKEN = {"type": "string", "description": "API key, for browsers (or the convoy_key cookie)"}
#: The key without a URL (gateway.wsauth): what browsers should use.
_SUBPROTOCOLS = {
    "type": "object",
    "properties": {
        "Sec-WebSocket-Protocol": {
            "type": "string",
            "description": "`convoy, convoy.key.<base64url of the API key>`: the key for browsers, "
            "kept out of URLs and logs; the gateway answers the subprotocol `convoy`",
        }
    },
}


def message(name: str, summary: str) -> dict[str, Any]:
    """The message ``name`` whose payload is the schema of that name (a JSON text frame)."""
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{name}"},
    }


def ws_binding(properties: dict[str, Any]) -> dict[str, Any]:
    """The WebSocket binding of a channel: its query ``properties`` and the subprotocol header."""
    return {
        "ws": {
            "method": "GET",
            "query": {"type": "object", "properties": properties},
            "headers": _SUBPROTOCOLS,
        }
    }
