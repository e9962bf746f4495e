"""Placeholder: every object is valid (the real checks come next)."""

from __future__ import annotations

from fake_kube.resources import Resource
from fake_kube.store import Obj


def validate(resource: Resource, obj: Obj) -> None:
    """Raise a 422 ``ApiError`` when ``obj`` is not a valid ``resource``."""
