"""Every object the fake stores is checked as a real API server would, or refused with 422.

- Core kinds (Pod, Secret, Service, ConfigMap, NetworkPolicy): the published
  OpenAPI schemas of Kubernetes ``CORE_VERSION`` as the ``kubernetes-validate``
  package ships them, in its strict flavour (an unknown field is an error, where
  a real server in its default ``fieldValidation=Warn`` would drop it and warn:
  here a typo in the runtime fails a test), plus the server-side rules a schema
  cannot say (:mod:`fake_kube.semantics`).
- Agent-sandbox kinds: the CRDs in ``deploy/kubernetes/crds`` (their OpenAPI v3
  schemas, unknown fields refused, ``default`` values filled in like a real
  server does); the PodSpec and NetworkPolicy rules embedded in them are checked
  against the core schemas above.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry
from referencing import Resource as SchemaResource

from fake_kube import semantics
from fake_kube import status as errors
from fake_kube.resources import BY_KIND, Resource
from fake_kube.store import Obj

CORE_VERSION = "1.33.0"
CRD_DIR = Path(__file__).resolve().parents[4] / "deploy" / "kubernetes" / "crds"
Causes = list[tuple[str, str]]
# Where a custom kind embeds core objects: (path in the object, the core kind it holds).
_EMBEDDED: dict[str, list[tuple[tuple[str, ...], str]]] = {
    "Sandbox": [(("spec", "podTemplate", "spec"), "Pod")],
    "SandboxTemplate": [
        (("spec", "podTemplate", "spec"), "Pod"),
        (("spec", "networkPolicy"), "NetworkPolicy"),
    ],
}


def _schema_dir() -> Path:
    package = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return package / f"v{CORE_VERSION}-local-strict"


@functools.cache
def _core_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """The validator ``kubernetes_validate.validate`` would build, built once per kind."""
    suffix = api_version.replace(".k8s.io", "").replace("/", "-")
    folder = _schema_dir()
    schema = json.loads((folder / f"{kind.lower()}-{suffix}.json").read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry: Registry[Any] = SchemaResource.from_contents(schema) @ Registry()
    registry = SchemaResource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 structural schema as JSON Schema that refuses unknown fields."""
    schema = dict(schema)
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema.setdefault("additionalProperties", False)
        schema["properties"] = {name: _closed(sub) for name, sub in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _closed(schema[key])
    return schema


@functools.cache
def crd_schemas() -> dict[str, dict[str, Any]]:
    """The open API v3 schema of every kind in ``CRD_DIR``, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        version = next(v for v in crd["spec"]["versions"] if v["served"])
        found[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return found


@functools.cache
def _crd_validator(kind: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(_closed(crd_schemas()[kind]))


def _default(schema: dict[str, Any], value: Any) -> None:
    """Fill in ``default``s below ``value`` in place (of the objects that are present)."""
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(sub, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default(schema["items"], item)


def _field(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<root>"


def _schema_causes(validator: jsonschema.protocols.Validator, obj: Obj, prefix: str = "") -> Causes:
    found = sorted(validator.iter_errors(obj), key=lambda error: list(map(str, error.absolute_path)))
    return [(prefix + _field(error.absolute_path), error.message) for error in found[:8]]


def _embedded(kind: str, obj: Obj) -> Causes:
    """The causes of the core objects ``obj`` embeds (see ``_EMBEDDED``)."""
    causes: Causes = []
    for path, core_kind in _EMBEDDED.get(kind, []):
        value: Any = obj
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, dict):
            continue
        spec = value if core_kind == "Pod" else {"podSelector": {}, **value}
        resource = BY_KIND[core_kind]
        wrapped = {
            "apiVersion": resource.api_version,
            "kind": core_kind,
            "metadata": {"name": "embedded"},
            "spec": spec,
        }
        prefix = ".".join(path) + "."
        inner = _schema_causes(_core_validator(core_kind, resource.api_version), wrapped)
        inner += semantics.check(core_kind, wrapped)
        causes += [(prefix + field.removeprefix("spec."), message) for field, message in inner]
    return causes


def validate(resource: Resource, obj: Obj, old: Obj | None = None) -> None:
    """Raise a 422 ``ApiError`` when ``obj`` is not a valid ``resource`` (``old``: the stored
    object it replaces); fills in a custom kind's defaults in place."""
    if resource.custom:
        schema = crd_schemas()[resource.kind]
        _default(schema, obj)
        causes = _schema_causes(_crd_validator(resource.kind), obj) + _embedded(resource.kind, obj)
    else:
        causes = _schema_causes(_core_validator(resource.kind, resource.api_version), obj)
    causes += semantics.metadata(resource, obj)
    if not resource.custom:
        causes += semantics.check(resource.kind, obj)
    if old is not None:
        causes += semantics.update(resource, old, obj)
    if causes:
        raise errors.invalid(resource, obj.get("metadata", {}).get("name", ""), causes)
