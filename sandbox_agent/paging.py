"""Opaque page cursors.

A cursor names the last item of the previous page (an event's seq, a task's
ordinal, a file's path). It is base64url-encoded so clients treat it as
opaque; a cursor that does not decode is a :class:`BadCursor` (answered 422).
"""

from __future__ import annotations

import base64
import binascii

from sandbox_agent.protocol import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT

__all__ = ["DEFAULT_PAGE_LIMIT", "MAX_PAGE_LIMIT", "BadCursor", "decode", "decode_int", "encode"]


class BadCursor(ValueError):
    """A ``page_id`` this agent did not hand out."""


def encode(value: str | int) -> str:
    raw = str(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> str:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode()
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise BadCursor(f"invalid page_id {cursor!r}") from error


def decode_int(cursor: str) -> int:
    text = decode(cursor)
    if not text.isdigit() or len(text) > 18:
        raise BadCursor(f"invalid page_id {cursor!r}")
    return int(text)
