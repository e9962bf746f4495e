"""Claiming a spare on Kubernetes, as a two-step commit any gateway can finish or undo.

The claim of a spare is recorded before the agent gets it, in the Secret
``convoy-<id>-claim`` (:func:`~gateway.runtimes.kubernetes_objects.claim_record`):
created "pending", never replaced (another gateway's create of the same answers
409: the spare was taken), then ``POST /claim`` to the agent, then the record is
marked "delivered". The record is what every gateway reads the claimed spec back
from (the agent's claim file is on the pod, out of the API's reach).

A gateway killed between the record and the mark leaves a *pending* record: the
agent may or may not have the claim. Such a sandbox is listed neither as a spare
nor as a conversation (:meth:`ClaimRecords.hidden`), and once the record is older
than any claim may take (:attr:`ClaimRecords.settle_after`: a claim here is cut
off after ``CLAIM_TIMEOUT``; the rest is the margin for the API server's clock),
:meth:`ClaimRecords.settle` (at the runtime's connect, before the gateway's first
reconcile lists the spares, and at every reconcile) asks the agent (``GET /ready``) and:

- it is still a spare: the claim is **undone** (the record deleted). The create
  that made it never answered its caller (it answers after the claim), so nobody
  holds that conversation; the sandbox is a spare again and the pool adopts it.
  Finishing it instead would make a conversation nobody was told of, counted
  against its owner's limits until it is reaped, and would lose the spare.
- it took the claim: the claim is **finished** (marked delivered): the
  conversation is then listed, adopted and served like any other. (So is a
  mark the claiming gateway could not write: until then only that gateway
  serves the conversation, the others do not list it.)
- it does not answer and its sandbox has ended: undone (the spare, EXITED, is removed
  by the pool's reconcile); otherwise it is looked at again at the next reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from uuid import UUID

import httpx

from gateway.errors import ClaimFailed, RuntimeFailure, SpareTaken
from gateway.runtimes import kubernetes_objects as objs
from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState
from gateway.runtimes.claiming import CLAIM_TIMEOUT, Claimer, claim_of
from gateway.runtimes.kubernetes_api import Conflict, KubeApi
from gateway.runtimes.kubernetes_orphans import age
from gateway.runtimes.kubernetes_watch import Mirror, gone

#: Seconds beyond the claim's own bound before a pending record is taken for abandoned
#: (creationTimestamp is the API server's clock, the age this gateway's).
_CLOCK_MARGIN = 20.0


class ClaimRecords:
    """The claim records of one installation (in ``secrets``, the Secrets' mirror)."""

    #: Seconds a pending record is left to the gateway making it (see the module docstring).
    settle_after = CLAIM_TIMEOUT + _CLOCK_MARGIN

    def __init__(self, api: KubeApi, policy: objs.PodPolicy, secrets: Mirror) -> None:
        self._api, self._policy, self._secrets = api, policy, secrets
        self._claimer = Claimer()
        self._http: httpx.AsyncClient | None = None  # settle's looks at agents
        self._sending: set[UUID] = set()  # claims this gateway is making right now
        self._delivered: set[UUID] = set()  # delivered here (the mark may not have been written)

    def pending(self, conversation_id: UUID) -> bool:
        """Whether the conversation's claim is recorded but not known to be delivered."""
        if conversation_id in self._delivered:
            return False
        record = self._secrets.get(objs.claim_record_name(conversation_id))
        if record is None or gone(record):
            return False
        annotations = (record.get("metadata") or {}).get("annotations") or {}
        return annotations.get(objs.CLAIM_STATE) == "pending"

    def hidden(self) -> set[UUID]:
        """The conversations whose claim is pending: neither spare nor conversation yet."""
        found: set[UUID] = set()
        for record in self._secrets.items.values():
            labels = (record.get("metadata") or {}).get("labels") or {}
            if labels.get(objs.ROLE) != "claim":
                continue
            with contextlib.suppress(KeyError, ValueError):
                conversation_id = UUID(labels[objs.CONVERSATION_ID])
                if self.pending(conversation_id):
                    found.add(conversation_id)
        return found

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """Record, send, mark (see the module docstring). :class:`SpareTaken` when the record
        exists already; a claim the agent refuses leaves the record to ``remove``."""
        body = objs.claim_record(self._policy, spec, claim_of(spec))
        self._sending.add(spec.conversation_id)
        try:
            try:
                self._secrets.put(await self._api.create("secrets", body))
            except Conflict:
                raise SpareTaken(f"sandbox {spare.conversation_id} was claimed already") from None
            except RuntimeFailure as error:
                raise ClaimFailed(f"the claim could not be recorded: {error}") from None
            try:
                async with asyncio.timeout(CLAIM_TIMEOUT):  # the bound settle_after relies on
                    handle = await self._claimer.claim(spare, spec)
            except TimeoutError:
                raise ClaimFailed(
                    f"the spare's agent did not take the claim within {CLAIM_TIMEOUT:g}s"
                ) from None
            self._delivered.add(spec.conversation_id)
            await self._mark_delivered(spec.conversation_id)
            return handle
        finally:
            self._sending.discard(spec.conversation_id)

    async def _mark_delivered(self, conversation_id: UUID) -> None:
        patch = {"metadata": {"annotations": {objs.CLAIM_STATE: "delivered"}}}
        with contextlib.suppress(RuntimeFailure):  # unmarked, a later settle asks the agent
            name = objs.claim_record_name(conversation_id)
            self._secrets.put(await self._api.patch("secrets", name, patch))

    async def settle(self, spare_of: Callable[[UUID], SandboxHandle | None]) -> int:
        """Finishes or undoes every abandoned pending claim; ``spare_of``: the sandbox as a spare
        (its claim left aside), ``None`` when it has no carrier. Returns how many were undone."""
        undone = 0
        for conversation_id in self.hidden() - self._sending:
            record = self._secrets.get(objs.claim_record_name(conversation_id))
            if record is None or age(record) < self.settle_after:
                continue
            spare = spare_of(conversation_id)
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=CLAIM_TIMEOUT)
            answer = await _spare_answer(self._http, spare)
            if answer is False:
                self._delivered.add(conversation_id)
                await self._mark_delivered(conversation_id)
            elif answer is True or spare is None or spare.state is SandboxState.EXITED:
                self._secrets.forget(objs.claim_record_name(conversation_id))
                with contextlib.suppress(RuntimeFailure):
                    undone += await self._api.delete("secrets", objs.claim_record_name(conversation_id))
        return undone

    def forget(self, conversation_id: UUID) -> None:
        """The conversation was removed: its claim is nothing to remember."""
        self._delivered.discard(conversation_id)

    async def close(self) -> None:
        await self._claimer.close()
        if self._http is not None:
            await self._http.aclose()


async def _spare_answer(http: httpx.AsyncClient, spare: SandboxHandle | None) -> bool | None:
    """Whether the agent says it is a spare (``None``: no running agent answered)."""
    if spare is None or spare.state is not SandboxState.RUNNING or not spare.base_url:
        return None
    try:
        response = await http.get(f"{spare.base_url}/ready", timeout=2.0)
        if response.status_code != 200:
            return None
        return bool(response.json().get("spare"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
