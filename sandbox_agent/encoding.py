"""Values made encodable as JSON: what an error body carries, whatever it was given.

:func:`jsonable` turns arbitrary objects (pydantic models, enums, dates, bytes,
dataclasses, exceptions in a validation error's ``ctx``) into plain JSON types;
:func:`json_safe` replaces what JSON cannot carry (non-finite floats, lone
surrogates); :func:`safe_errors` applies both to a list of validation errors and
drops their inputs when they nest too deeply to encode. Used by the agent's error
handlers (:mod:`sandbox_agent.errors`) and the gateway's (:mod:`gateway.errors`).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry replaced: non-finite floats become None, lone
    surrogates (valid in a JSON escape, not in UTF-8) are backslash-escaped."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {json_safe(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types, the way FastAPI's ``jsonable_encoder`` gives pydantic's
    errors (their inputs and ``ctx``): models dumped, bytes decoded, enums as their values,
    dates ISO, any other object as its attributes (an exception in ``ctx`` becomes ``{}``)."""
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, dict):
        return {jsonable(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value.as_tuple().exponent >= 0 else float(value)  # type: ignore[operator]
    if isinstance(value, UUID | PurePath | datetime.timedelta):
        return value.total_seconds() if isinstance(value, datetime.timedelta) else str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    try:
        return jsonable(dict(value))
    except (TypeError, ValueError):
        pass
    try:
        return jsonable(vars(value))
    except TypeError:
        return str(value)


def safe_errors(errors: list[Any]) -> list[Any]:
    """Validation errors as JSON can carry them (:func:`json_safe`); when an input nests
    too deeply to encode, the errors without their inputs."""
    try:
        return list(json_safe(jsonable(errors)))
    except RecursionError:
        shallow = [
            {key: item for key, item in error.items() if key not in ("input", "ctx")} for error in errors
        ]
        return list(json_safe(jsonable(shallow)))
