"""RBAC as the API server's authorizer sees it: which recorded requests a Role's rules allow.

``FakeKube.enforce(rules)`` makes the server refuse (403 Forbidden, as a real one
would for the gateway's service account) every request its rules do not allow;
:func:`uncovered` checks a request log against them after the fact. Discovery
paths are always allowed (every authenticated user may read them).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import yaml


class Request(Protocol):
    @property
    def verb(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def resource(self) -> str: ...
    @property
    def subresource(self) -> str: ...
    @property
    def name(self) -> str | None: ...


def _has(values: list[str] | None, value: str) -> bool:
    return values is not None and ("*" in values or value in values)


def allows(rules: Iterable[dict[str, Any]], request: Request) -> bool:
    """Whether one of ``rules`` (a Role's ``rules``) allows ``request``."""
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    for rule in rules:
        names = rule.get("resourceNames")
        if (
            _has(rule.get("apiGroups"), request.group)
            and _has(rule.get("resources"), resource)
            and _has(rule.get("verbs"), request.verb)
            and (not names or request.name in names)
        ):
            return True
    return False


def rules_of(manifest: Path) -> list[dict[str, Any]]:
    """The rules of every Role and ClusterRole in a (multi-document) YAML manifest."""
    rules: list[dict[str, Any]] = []
    for document in yaml.safe_load_all(manifest.read_text()):
        if isinstance(document, dict) and document.get("kind") in ("Role", "ClusterRole"):
            rules += document.get("rules") or []
    return rules


def uncovered(requests: Iterable[Request], rules: list[dict[str, Any]]) -> list[Request]:
    """The resource requests ``rules`` do not allow (discovery requests have no resource)."""
    return [request for request in requests if request.resource and not allows(rules, request)]
