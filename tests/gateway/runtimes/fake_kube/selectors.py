"""Label and field selectors as the API server parses them from a query string.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a)``,
``k`` (exists) and ``!k`` (does not exist), comma-separated, all must hold.
Field selectors: ``path=v``, ``path==v``, ``path!=v`` over a dotted path of the
object (``metadata.name``, ``status.phase``, ``spec.nodeName``...).
A malformed selector is a :class:`SelectorError` (the server answers 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Predicate = Callable[[dict[str, Any]], bool]

_SET = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|!=|=)\s*([A-Za-z0-9._-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*$")


class SelectorError(ValueError):
    """A selector the server cannot parse."""


def _terms(selector: str) -> list[str]:
    """Split at the commas that are not inside a set's parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term for term in terms if term.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    if match := _SET.match(term):
        key, operator, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if match := _EQ.match(term):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := _EXISTS.match(term):
        negated, key = match.group(1) == "!", match.group(2)
        return lambda labels: (key in labels) != negated
    raise SelectorError(f"unable to parse requirement: {term!r}")


def label_selector(selector: str | None) -> Predicate:
    """A predicate on an object's ``metadata.labels``."""
    checks = [_label_term(term) for term in _terms(selector or "")]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return matches


def labels_match(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    """A ``matchLabels`` selector on a label map."""
    return all(labels.get(key) == value for key, value in match_labels.items())


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector(selector: str | None) -> Predicate:
    """A predicate on dotted fields of the object (an absent field is the empty string)."""
    checks: list[Predicate] = []
    for term in _terms(selector or ""):
        match = _EQ.match(term)
        if match is None:
            raise SelectorError(f"invalid field selector: {term!r}")
        checks.append(_field_term(*match.groups()))
    return lambda obj: all(check(obj) for check in checks)


def _field_term(path: str, operator: str, value: str) -> Predicate:
    if operator == "!=":
        return lambda obj: _field(obj, path) != value
    return lambda obj: _field(obj, path) == value
