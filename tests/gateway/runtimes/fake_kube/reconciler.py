"""The plumbing of the simulated controllers: events in, deduplicated reconciles out.

A controller maps each store event to the keys ``(kind, namespace, name)`` it
must look at again; each key is reconciled once per loop iteration however many
events named it, synchronously (store calls do not await), so a reconcile sees
one consistent state. An error in a reconcile is kept in ``errors`` (the fixture
fails the test with it: it is a bug of the fake, or of a test).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from fake_kube.store import Event, Obj, Store, now

Key = tuple[str, str, str]


def name_hash(name: str) -> str:
    """A short stable hash of a name, for label values (the real controllers hash names too)."""
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def controller_of(obj: Obj) -> Obj | None:
    """The owner reference with ``controller: true``, if any."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


def owner_reference(obj: Obj) -> Obj:
    """A controller reference to ``obj``."""
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def condition(
    kind: str, status: bool, reason: str, message: str, generation: int, old: list[Obj] | None = None
) -> Obj:
    """A metav1.Condition; its lastTransitionTime kept from ``old`` when the status is the same."""
    value = "True" if status else "False"
    previous = next((c for c in old or [] if c.get("type") == kind), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == value else now()
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": generation,
    }


class Reconciler:
    def __init__(
        self, store: Store, route: Callable[[Event], list[Key]], reconcile: Callable[[Key], None]
    ) -> None:
        self.store, self._route, self._reconcile = store, route, reconcile
        self._pending: set[Key] = set()
        self.errors: list[BaseException] = []
        store.listeners.append(self._on_event)

    def _on_event(self, event: Event) -> None:
        for key in self._route(event):
            self.enqueue(key)

    def enqueue(self, key: Key, delay: float = 0) -> None:
        """Reconcile ``key`` soon (after ``delay`` seconds)."""
        loop = asyncio.get_running_loop()
        if delay > 0:
            loop.call_later(delay, self.enqueue, key)
        elif key not in self._pending:
            self._pending.add(key)
            loop.call_soon(self._run, key)

    def _run(self, key: Key) -> None:
        self._pending.discard(key)
        try:
            self._reconcile(key)
        except Exception as error:  # kept for the fixture, see the module's docstring
            self.errors.append(error)
