"""The terminal channel of the AsyncAPI document (:mod:`gateway.asyncapi`): a PTY's raw bytes
both ways as binary frames, with JSON control frames (resize in, skipped/exit/error out)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.asyncapi_objects import TOKEN, message, ws_binding
from sandbox_agent.protocol import (
    WS_CLOSE_BAD_QUERY,
    WS_CLOSE_NORMAL,
    WS_CLOSE_NOT_FOUND,
    TerminalError,
    TerminalExit,
    TerminalSkipped,
)

__all__ = ["TERMINAL_OUT", "terminal_channel", "terminal_messages", "terminal_operations"]

#: Text frames a terminal's viewer receives, besides its binary output.
TERMINAL_OUT: tuple[type[BaseModel], ...] = (TerminalSkipped, TerminalExit, TerminalError)
_BYTES = {"type": "string", "format": "binary"}


def terminal_channel() -> dict[str, Any]:
    out = {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"} for model in TERMINAL_OUT}
    return {
        "address": "/conversation/{conversation_id}/terminal/{terminal_id}",
        "description": "A terminal (PTY) of the conversation: its output from byte offset on, exactly "
        "(no gap, no duplicate; history then live), then live. Several viewers may watch, each from "
        "its own offset; the terminal outlives them all. After its exit: the exit frame, then a close "
        f"with {WS_CLOSE_NORMAL}. Unknown terminal (or conversation, or another user's): "
        f"{WS_CLOSE_NOT_FOUND}.",
        "parameters": {
            "conversation_id": {"description": "The conversation's UUID"},
            "terminal_id": {"description": "The terminal's UUID (POST /conversation/{id}/terminal)"},
        },
        "messages": {
            "output": {"$ref": "#/components/messages/TerminalOutput"},
            "input": {"$ref": "#/components/messages/TerminalInput"},
            "resize": {"$ref": "#/components/messages/TerminalResize"},
            **out,
        },
        "bindings": ws_binding(
            {
                "offset": {
                    "type": "integer",
                    "minimum": 0,
                    "default": 0,
                    "description": "Replay from this byte (0: the start). Older than what is kept: a "
                    f"skipped frame says where the replay starts. Past the end: close {WS_CLOSE_BAD_QUERY}.",
                },
                "token": TOKEN,
            }
        ),
    }


def terminal_operations() -> dict[str, Any]:
    channel = {"$ref": "#/channels/terminal"}
    return {
        "terminalSendOutput": {
            "action": "send",
            "channel": channel,
            "summary": "Binary frames: the terminal's raw bytes. Text frames: JSON control frames.",
            "messages": [
                {"$ref": "#/channels/terminal/messages/output"},
                *({"$ref": f"#/channels/terminal/messages/{model.__name__}"} for model in TERMINAL_OUT),
            ],
        },
        "terminalReceiveInput": {
            "action": "receive",
            "channel": channel,
            "summary": "Binary frames are typed into the terminal as they are; a resize text frame "
            "resizes the PTY.",
            "messages": [
                {"$ref": "#/channels/terminal/messages/input"},
                {"$ref": "#/channels/terminal/messages/resize"},
            ],
        },
    }


def terminal_messages() -> dict[str, Any]:
    messages: dict[str, Any] = {
        "TerminalOutput": {
            "name": "TerminalOutput",
            "title": "TerminalOutput",
            "summary": "Raw bytes the terminal wrote (binary frame)",
            "contentType": "application/octet-stream",
            "payload": _BYTES,
        },
        "TerminalInput": {
            "name": "TerminalInput",
            "title": "TerminalInput",
            "summary": "Raw bytes typed into the terminal (binary frame)",
            "contentType": "application/octet-stream",
            "payload": _BYTES,
        },
        "TerminalResize": message("TerminalResize", "Resize the PTY (text frame)"),
    }
    for model in TERMINAL_OUT:
        messages[model.__name__] = message(model.__name__, (model.__doc__ or "").strip().split("\n")[0])
    return messages
