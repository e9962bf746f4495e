"""The fake cluster's etcd: objects, one resourceVersion counter, an event history.

Every method runs on the server's event loop (the HTTP handlers, the simulated
controllers and the fault handle all call it there), so there is no locking.
Each write gets the next resourceVersion and appends a watch event to a bounded
history; a watch from a version older than the history is told 410 Gone (see
:meth:`Store.events_since`). Listeners (the simulated controllers and kubelet)
are called synchronously after every write and must only schedule work.

Objects are validated (``validator``) after the server has filled in their
metadata and before they are stored: an invalid one raises an ``ApiError`` 422.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fake_kube import status as errors
from fake_kube.resources import Resource

Obj = dict[str, Any]
Key = tuple[Resource, str, str]
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what the API server's generateName draws from
# Metadata only the server writes: a client's update cannot change them.
_SERVER_FIELDS = (
    "uid",
    "creationTimestamp",
    "namespace",
    "name",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass(frozen=True)
class Event:
    """A watch event: ``type`` ADDED, MODIFIED or DELETED."""

    resource_version: int
    type: str
    resource: Resource
    namespace: str
    object: Obj
    # The object before a MODIFIED event: a watch with a selector turns a change that
    # moves an object out of (into) its selection into DELETED (ADDED), as a real server does.
    previous: Obj | None = None


def now(later: float = 0) -> str:
    """A timestamp as the API writes one (RFC 3339, seconds, UTC), ``later`` seconds from now."""
    return (datetime.now(UTC) + timedelta(seconds=later)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    def __init__(self, validator: Callable[[Resource, Obj, Obj | None], None], history: int = 5000) -> None:
        self._validate = validator
        self._objects: dict[Key, Obj] = {}
        self._history: deque[Event] = deque(maxlen=history)
        self._compacted = 0  # every event at or below this version is forgotten
        self.version = 1
        self.listeners: list[Callable[[Event], None]] = []
        self._subscribers: set[asyncio.Queue[Event]] = set()
        # Whether deleting an object only marks it (deletionTimestamp) for someone to finish
        # later (the kubelet, for a pod it runs): the grace period in seconds, or None.
        self.graceful: Callable[[Resource, Obj, int | None], int | None] = lambda *_: None

    # --- reads -------------------------------------------------------------------
    def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        try:
            return copy.deepcopy(self._objects[resource, namespace, name])
        except KeyError:
            raise errors.not_found(resource, name) from None

    def find(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        found = self._objects.get((resource, namespace, name))
        return None if found is None else copy.deepcopy(found)

    def select(
        self, resource: Resource, namespace: str | None, match: Callable[[Obj], bool] = lambda _: True
    ) -> list[Obj]:
        """The objects of ``resource`` (in ``namespace``; None: all) that ``match``, by name."""
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self._objects.items(), key=lambda item: item[0][1:])
            if kind == resource and (namespace is None or ns == namespace) and match(obj)
        ]

    # --- writes -------------------------------------------------------------------
    def create(self, resource: Resource, namespace: str, obj: Obj) -> Obj:
        """Store a new object: name (or generateName), uid, versions, timestamps filled in."""
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        metadata = obj.setdefault("metadata", {})
        if metadata.get("namespace", namespace) != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise errors.invalid(
                    resource, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            suffix = "".join(secrets.choice(_NAME_CHARS) for _ in range(5))
            metadata["name"] = metadata["generateName"] + suffix
        name = metadata["name"]
        if (resource, namespace, name) in self._objects:
            raise errors.already_exists(resource, name)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            metadata.pop(field, None)
        metadata.update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if resource.status_subresource:
            obj.pop("status", None)  # status is the controllers' to write
        return self._write(resource, namespace, obj, "ADDED")

    def update(self, resource: Resource, namespace: str, name: str, obj: Obj, subresource: str = "") -> Obj:
        """Replace an object (``subresource`` "status": only its status; "": all but its status).

        A ``metadata.resourceVersion`` that is not the stored one is a 409 Conflict; identity
        fields (uid, creation time, name) cannot change."""
        old = self.get(resource, namespace, name)
        given = obj.get("metadata", {}).get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise errors.conflict(resource, name)
        new = copy.deepcopy(obj)
        if subresource == "status":
            new = {**old, "status": new.get("status", {})}
        else:
            metadata = {**new.get("metadata", {})}
            for field in _SERVER_FIELDS:
                if field in old["metadata"]:
                    metadata[field] = old["metadata"][field]
                else:
                    metadata.pop(field, None)
            new["metadata"] = metadata
            if resource.status_subresource:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            if new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        new["apiVersion"], new["kind"] = resource.api_version, resource.kind
        if new == old:
            return old  # a no-op write keeps the version and sends no event, like a real server
        return self._write(resource, namespace, new, "MODIFIED", old)

    def delete(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        propagation: str = "Background",
        grace: int | None = None,
    ) -> Obj:
        """Delete an object. A graceful deletion (``graceful`` says so; ``grace`` 0 never is) only
        marks it with a deletionTimestamp. Otherwise it goes at once and, unless ``propagation``
        is Orphan, so does every object it owns (recursively, by ``ownerReferences``, each
        deleted the same way); orphans lose their reference to it."""
        obj = self.get(resource, namespace, name)
        if grace != 0:
            if obj["metadata"].get("deletionTimestamp"):
                return obj  # already terminating
            seconds = self.graceful(resource, obj, grace)
            if seconds is not None:
                marked = copy.deepcopy(obj)
                marked["metadata"].update(deletionTimestamp=now(seconds), deletionGracePeriodSeconds=seconds)
                return self._write(resource, namespace, marked, "MODIFIED", obj)
        del self._objects[resource, namespace, name]
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self._publish(Event(self.version, "DELETED", resource, namespace, obj))
        uid = obj["metadata"]["uid"]
        for (kind, ns, dependent), child in list(self._objects.items()):
            refs = child.get("metadata", {}).get("ownerReferences") or []
            if ns != namespace or not any(ref.get("uid") == uid for ref in refs):
                continue
            if propagation == "Orphan":
                orphan = copy.deepcopy(child)
                orphan["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") != uid]
                self._write(kind, ns, orphan, "MODIFIED", child)
            elif (kind, ns, dependent) in self._objects:
                self.delete(kind, ns, dependent, propagation)
        return obj

    def _write(self, resource: Resource, namespace: str, obj: Obj, kind: str, old: Obj | None = None) -> Obj:
        self._validate(resource, obj, old)
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self._objects[resource, namespace, obj["metadata"]["name"]] = obj
        self._publish(Event(self.version, kind, resource, namespace, copy.deepcopy(obj), old))
        return copy.deepcopy(obj)

    # --- watch --------------------------------------------------------------------
    def _publish(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].resource_version
        self._history.append(event)
        for queue in self._subscribers:
            queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)

    def compact(self) -> None:
        """Forget the whole history, as an etcd compaction does: older watches get 410."""
        self._history.clear()
        self._compacted = self.version

    def events_since(self, version: int) -> list[Event]:
        """The events after ``version``; a 410 Gone ``ApiError`` if some were forgotten."""
        if version < self._compacted:
            raise errors.gone(f"too old resource version: {version} ({self._compacted + 1})")
        return [event for event in self._history if event.resource_version > version]

    def subscribe(self) -> asyncio.Queue[Event]:
        """A queue of every event from now on; :meth:`unsubscribe` it when done."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self._subscribers.discard(queue)
