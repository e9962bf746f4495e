"""The patch types of PATCH requests, by content type.

- ``application/merge-patch+json``: RFC 7386 (null deletes, objects merge,
  everything else replaces);
- ``application/strategic-merge-patch+json``: a merge patch in which the lists
  that have a merge key in the core API (containers, env, volumes, ports,
  conditions...) merge item by item on that key, and ``$patch: delete`` in an
  item removes it; other lists replace. Enough for the simple cases;
- ``application/json-patch+json``: RFC 6902 (add, remove, replace, test,
  copy, move);
- ``application/apply-patch+yaml`` (server-side apply): approximated as a merge
  patch of the whole intent; field ownership is not tracked.

A patch the server cannot apply is a :class:`PatchError` (the server answers
422 or 400); a content type it does not take is :class:`UnsupportedPatch` (415).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

# The merge key of every list of the core API a strategic patch is likely to touch.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "tolerations": "key",
    "hostAliases": "ip",
}


class PatchError(ValueError):
    """A patch that does not apply to the object."""


class UnsupportedPatch(ValueError):
    """A patch content type the resource does not take."""


def merge_patch(target: Any, patch: Any, strategic: bool = False) -> Any:
    """RFC 7386, or its strategic variant when ``strategic``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif strategic and key in _MERGE_KEYS and all(isinstance(v, list) for v in (value, result.get(key))):
            result[key] = _merge_list(result[key], value, _MERGE_KEYS[key])
        else:
            result[key] = merge_patch(result.get(key), value, strategic)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"a strategic merge patch item of a list merged on {key!r} lacks it")
        same = (i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key])
        index = next(same, None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(merge_patch({}, item, strategic=True))
        else:
            merged[index] = merge_patch(merged[index], item, strategic=True)
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"a JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    for part in parts[:-1]:
        try:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        except (KeyError, IndexError, ValueError) as error:
            raise PatchError(f"path not found: /{'/'.join(parts)}") from error
    return doc


def _get(doc: Any, parts: list[str]) -> Any:
    return _parent(doc, [*parts, ""])


def _remove(doc: Any, parts: list[str]) -> Any:
    parent, last = _parent(doc, parts), parts[-1]
    try:
        return parent.pop(int(last) if isinstance(parent, list) else last)
    except (KeyError, IndexError, ValueError) as error:
        raise PatchError(f"path not found: /{'/'.join(parts)}") from error


def _add(doc: Any, parts: list[str], value: Any) -> None:
    parent, last = _parent(doc, parts), parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if index > len(parent):
            raise PatchError(f"index out of range: /{'/'.join(parts)}")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"cannot add below a scalar: /{'/'.join(parts)}")


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of ``target``."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        op, parts = operation.get("op"), _pointer(operation.get("path", ""))
        if not parts:
            raise PatchError("a JSON patch may not replace the whole object")
        if op == "add":
            _add(doc, parts, copy.deepcopy(operation["value"]))
        elif op == "remove":
            _remove(doc, parts)
        elif op == "replace":
            _remove(doc, parts)
            _add(doc, parts, copy.deepcopy(operation["value"]))
        elif op in ("copy", "move"):
            source = _pointer(operation["from"])
            value = _remove(doc, source) if op == "move" else copy.deepcopy(_get(doc, source))
            _add(doc, parts, value)
        elif op == "test":
            if _get(doc, parts) != operation.get("value"):
                raise PatchError(f"test failed at {operation['path']}")
        else:
            raise PatchError(f"unknown JSON patch operation {op!r}")
    return doc


def apply(content_type: str, target: dict[str, Any], body: bytes, custom: bool) -> dict[str, Any]:
    """``target`` patched by ``body`` of ``content_type`` (see the module's list)."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        patch = yaml.safe_load(body) if kind == APPLY else yaml.safe_load(body.decode() or "null")
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise PatchError(f"the patch does not parse: {error}") from error
    if kind == JSON_PATCH:
        result = json_patch(target, patch)
    elif kind in (MERGE, APPLY):
        result = merge_patch(target, patch)
    elif kind == STRATEGIC and not custom:
        result = merge_patch(target, patch, strategic=True)
    else:
        accepted = f"{JSON_PATCH}, {MERGE}, {APPLY}" + ("" if custom else f", {STRATEGIC}")
        raise UnsupportedPatch(
            f"the body of the request was in an unknown format - accepted media types include: {accepted}"
        )
    if not isinstance(result, dict):
        raise PatchError("the patched object is not an object")
    return result
