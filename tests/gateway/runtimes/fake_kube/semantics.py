"""The API server's own rules that an OpenAPI schema does not express (a useful subset).

Names (DNS-1123 subdomains; DNS-1035 labels for Services), label keys and
values; for a Pod: containers present, named as DNS labels and unique, an image
each, mounts naming a declared volume, env references complete, ports in
range; a Secret's keys and base64 data; and on update, a Pod's spec is
immutable but for its containers' images (what a real server allows, roughly).
Each rule gives ``(field, message)`` causes; none: valid.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from fake_kube.resources import Resource

Causes = list[tuple[str, str]]
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME = re.compile(r"^[^=]+$")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
# The enumerations the server enforces (the published schemas only describe them).
_POD_ENUMS = {
    "restartPolicy": ("Always", "OnFailure", "Never"),
    "dnsPolicy": ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
}
_CONTAINER_ENUMS = {
    "imagePullPolicy": ("Always", "IfNotPresent", "Never"),
    "terminationMessagePolicy": ("File", "FallbackToLogsOnError"),
}


def _enums(path: str, obj: dict[str, Any], enums: dict[str, tuple[str, ...]]) -> Causes:
    return [
        (f"{path}.{field}", f"Unsupported value: {obj[field]!r}: supported values: {', '.join(allowed)}")
        for field, allowed in enums.items()
        if field in obj and obj[field] not in allowed
    ]


def _name(name: str, kind: str) -> str | None:
    if kind == "Service":
        ok = len(name) <= 63 and bool(_DNS_1035.match(name))
        return (
            None
            if ok
            else (
                "a DNS-1035 label must consist of lower case alphanumeric characters or "
                "'-', start with a letter and end with an alphanumeric one (at most 63)"
            )
        )
    if len(name) <= 253 and _SUBDOMAIN.match(name):
        return None
    return (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
        "and must start and end with an alphanumeric character"
    )


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (
        (not prefix or (len(prefix) <= 253 and bool(_SUBDOMAIN.match(prefix))))
        and len(name) <= 63
        and bool(_LABEL_NAME.match(name))
    )


def metadata(resource: Resource, obj: dict[str, Any]) -> Causes:
    """Name, labels and annotations of any object."""
    meta = obj.get("metadata") or {}
    causes: Causes = []
    if (problem := _name(meta.get("name", ""), resource.kind)) is not None:
        causes.append(("metadata.name", f"Invalid value: {meta.get('name')!r}: {problem}"))
    for key, value in (meta.get("labels") or {}).items():
        if not _label_key(key):
            causes.append(("metadata.labels", f"Invalid value: {key!r}: not a valid label key"))
        if not isinstance(value, str) or (value and (len(value) > 63 or not _LABEL_NAME.match(value))):
            causes.append(("metadata.labels", f"Invalid value: {value!r}: not a valid label value"))
    for key in meta.get("annotations") or {}:
        if not _label_key(key):
            causes.append(("metadata.annotations", f"Invalid value: {key!r}: not a valid annotation key"))
    return causes


def _container(path: str, container: dict[str, Any], volumes: set[str]) -> Causes:
    causes: Causes = []
    if not _DNS_LABEL.match(container.get("name", "")) or len(container.get("name", "")) > 63:
        causes.append((f"{path}.name", f"Invalid value: {container.get('name')!r}: not a DNS-1123 label"))
    if not container.get("image"):
        causes.append((f"{path}.image", "Required value"))
    for index, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            causes.append((f"{path}.volumeMounts[{index}].name", f"Not found: {mount.get('name')!r}"))
        if not str(mount.get("mountPath", "")).startswith("/"):
            causes.append((f"{path}.volumeMounts[{index}].mountPath", "Invalid value: not an absolute path"))
    for index, env in enumerate(container.get("env") or []):
        if not _ENV_NAME.match(env.get("name", "")):
            causes.append((f"{path}.env[{index}].name", f"Invalid value: {env.get('name')!r}"))
        ref = (env.get("valueFrom") or {}).get("secretKeyRef")
        if ref is not None and not (ref.get("name") and ref.get("key")):
            causes.append((f"{path}.env[{index}].valueFrom.secretKeyRef", "Required value: name and key"))
    causes += _enums(path, container, _CONTAINER_ENUMS)
    for index, port in enumerate(container.get("ports") or []):
        causes += _enums(f"{path}.ports[{index}]", port, {"protocol": _PROTOCOLS})
        if not 0 < int(port.get("containerPort", 0)) < 65536:
            causes.append((f"{path}.ports[{index}].containerPort", "Invalid value: not between 1 and 65535"))
    return causes


def _pod(spec: dict[str, Any]) -> Causes:
    volumes = {volume.get("name") for volume in spec.get("volumes") or []}
    causes = _enums("spec", spec, _POD_ENUMS)
    if not spec.get("containers"):
        causes.append(("spec.containers", "Required value"))
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            if container.get("name") in seen:
                causes.append((f"spec.{group}[{index}].name", f"Duplicate value: {container.get('name')!r}"))
            seen.add(container.get("name", ""))
            causes += _container(f"spec.{group}[{index}]", container, volumes)
    if len(volumes) != len(spec.get("volumes") or []):
        causes.append(("spec.volumes", "Duplicate value: a volume name is used twice"))
    return causes


def _secret(obj: dict[str, Any]) -> Causes:
    causes: Causes = []
    for key in {**(obj.get("data") or {}), **(obj.get("stringData") or {})}:
        if not _SECRET_KEY.match(key):
            causes.append(
                (
                    f"data[{key}]",
                    "Invalid value: a valid config key must consist of alphanumeric "
                    "characters, '-', '_' or '.'",
                )
            )
    for key, value in (obj.get("data") or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError):
            causes.append((f"data[{key}]", "Invalid value: not base64"))
    return causes


def _network_policy(spec: dict[str, Any]) -> Causes:
    causes = [
        ("spec.policyTypes", f"Unsupported value: {kind!r}")
        for kind in spec.get("policyTypes") or []
        if kind not in ("Ingress", "Egress")
    ]
    for direction in ("ingress", "egress"):
        for index, rule in enumerate(spec.get(direction) or []):
            for number, port in enumerate(rule.get("ports") or []):
                causes += _enums(f"spec.{direction}[{index}].ports[{number}]", port, {"protocol": _PROTOCOLS})
    return causes


def check(kind: str, obj: dict[str, Any]) -> Causes:
    """The kind's own rules."""
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return _pod(spec)
    if kind == "Secret":
        return _secret(obj)
    if kind == "NetworkPolicy":
        return _network_policy(spec)
    if kind == "Service":
        return _enums("spec", spec, {"type": ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")})
    return []


def _mutable_cleared(spec: dict[str, Any], bound: bool) -> dict[str, Any]:
    """``spec`` without what an update may change: images, and the node of a pod not yet bound."""
    cleared = {
        **spec,
        **{
            group: [{**c, "image": None} for c in spec.get(group) or []]
            for group in ("containers", "initContainers")
        },
    }
    if not bound:
        cleared.pop("nodeName", None)
    return cleared


def update(resource: Resource, old: dict[str, Any], new: dict[str, Any]) -> Causes:
    """What an update may not change (a pod's spec but its images; binding it to a node once)."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    bound = bool(old_spec.get("nodeName"))
    if resource.kind == "Pod" and _mutable_cleared(old_spec, bound) != _mutable_cleared(new_spec, bound):
        return [
            (
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only "
                "additions to existing tolerations) or `spec.terminationGracePeriodSeconds`",
            )
        ]
    if resource.kind == "Secret" and old.get("immutable") and old.get("data") != new.get("data"):
        return [("data", "Forbidden: field is immutable when `immutable` is set")]
    return []
