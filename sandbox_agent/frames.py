"""``parse_frame``: the JSON of one client WebSocket frame, read safely.

A frame is client input like any other: whatever it holds, reading it raises
:class:`BadFrame` with a sentence for the client's ``Error`` frame and never
anything else. Nesting is bounded (``MAX_FRAME_DEPTH``): the JSON decoder, the
validation errors that repeat their input and the event log's encoder all
recurse, and a frame nested thousands deep would end the socket with a
``RecursionError``.
"""

from __future__ import annotations

import json
from typing import Any

#: Arrays and objects inside one another; deeper frames are refused (an event's detail
#: is stored inside its envelope, which its encoder caps at 255 levels).
MAX_FRAME_DEPTH = 128


class BadFrame(ValueError):
    """``str(error)`` says what is wrong with the frame."""


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_frame(text: str, max_depth: int = MAX_FRAME_DEPTH) -> Any:
    """The decoded frame; raises :class:`BadFrame` when it is not JSON or nests too deeply."""
    too_deep = f"frame nests arrays and objects deeper than {max_depth} levels"
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadFrame(too_deep) from None
    except ValueError as error:
        raise BadFrame(f"frame is not JSON: {error}") from None
    # Counting brackets is cheap; only a frame with enough of them can be too deep.
    if text.count("[") + text.count("{") > max_depth and _depth_exceeds(value, max_depth):
        raise BadFrame(too_deep)
    return value
