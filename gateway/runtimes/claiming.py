"""What every runtime does the same way to claim a spare: one ``POST /claim`` to its agent,
``GET /claim`` to learn what a spare became, and the spec of a claimed spare read back from
the claim its agent keeps.

See :meth:`gateway.runtimes.base.Runtime.claim` and :mod:`sandbox_agent.claim`.
"""

from __future__ import annotations

import dataclasses

import httpx

from gateway.agent_transport import AgentTransport
from gateway.errors import ClaimFailed, SpareTaken
from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState
from sandbox_agent.claim import Claim, ClaimState
from sandbox_agent.protocol import CLAIM_SECRET_HEADER

#: Seconds a claim may take: one small request to an agent that is up.
CLAIM_TIMEOUT = 10.0
#: Seconds a runtime's listing waits for a spare's answer to ``GET /claim`` (a small answer
#: from memory) before it reads the claim another way.
ASK_TIMEOUT = 2.0
#: Where the agent keeps its claim, beside its token file (process and memory runtimes).
CLAIM_FILE = "claim.json"


def claim_of(spec: SandboxSpec) -> Claim:
    """What the agent is handed for the conversation ``spec``."""
    return Claim(
        conversation_id=spec.conversation_id,
        token=spec.token,
        owner=spec.owner,
        title=spec.title,
        created_at=spec.created_at,
        idle_timeout=spec.idle_timeout,
        env=dict(spec.env),
        on_idle="pause" if spec.on_idle == "pause" else "delete",
    )


def claimed_spec(spare: SandboxSpec, claim: Claim) -> SandboxSpec:
    """The spec of the spare ``spare`` once ``claim`` made it a conversation's: the claim's
    who and what, the spare's limits and network (a pool takes only specs that match them)."""
    return dataclasses.replace(
        spare,
        owner=claim.owner,
        title=claim.title,
        token=claim.token,
        created_at=claim.created_at,
        env=dict(claim.env),
        idle_timeout=claim.idle_timeout,
        on_idle=claim.on_idle,
        pool=None,
    )


class Claimer:
    """Sends claims, over one HTTP client kept for the runtime's life (making one per
    claim would cost more than the claim)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def claim(self, spare: SandboxHandle, spec: SandboxSpec) -> SandboxHandle:
        """:meth:`Runtime.claim`'s call to the agent; the handle the runtime then reports."""
        if spare.spec.pool is None or spare.state is not SandboxState.RUNNING:
            raise ClaimFailed(f"sandbox {spare.conversation_id} is no running spare")
        if spec.conversation_id != spare.conversation_id:
            raise ClaimFailed("a spare is claimed for the conversation id it was made for")
        body = claim_of(spec).model_dump_json().encode()
        headers = {CLAIM_SECRET_HEADER: spare.spec.token, "Content-Type": "application/json"}
        try:
            response = await self._http().post(f"{spare.base_url}/claim", content=body, headers=headers)
        except httpx.HTTPError as error:
            raise ClaimFailed(f"the spare's agent did not answer the claim: {error!r}") from None
        if response.status_code == 409:
            raise SpareTaken(f"sandbox {spare.conversation_id} was claimed already")
        if response.status_code != 201:
            raise ClaimFailed(
                f"the spare's agent refused the claim ({response.status_code}): {response.text}"
            )
        return SandboxHandle(
            spec=claimed_spec(spare.spec, claim_of(spec)), base_url=spare.base_url, state=SandboxState.RUNNING
        )

    async def ask(self, base_url: str, secret: str) -> ClaimState | None:
        """What the agent at ``base_url``, made as a spare with the claim secret ``secret``, says
        it is (``GET /claim``: a spare, or the claim it serves). ``None`` when it says nothing
        (no answer, a refusal, an agent too old to know the question): the caller reads the
        claim another way (its file). Its answer is the truth: the agent keeps a claim on disk
        before it takes it, reloads it before it serves, and answers after a claim under way."""
        try:
            response = await self._http().get(
                f"{base_url}/claim", headers={CLAIM_SECRET_HEADER: secret}, timeout=ASK_TIMEOUT
            )
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return ClaimState.model_validate_json(response.content)
        except ValueError:
            return None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=CLAIM_TIMEOUT, transport=AgentTransport())
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
