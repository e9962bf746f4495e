"""``/claim``: a spare agent is handed its conversation, and says what it is (see
:mod:`sandbox_agent.claim`).

Never proxied: the gateway's pool and runtime call them, with the spare's claim secret
in ``X-Convoy-Claim-Secret``.

- ``POST /claim``: 401 without the right secret (and on an agent that is no spare and
  so has none), 409 once claimed; 201 with the READY event it recorded as event 1 of
  the conversation.
- ``GET /claim``: 200 with a :class:`~sandbox_agent.claim.ClaimState` (the claim it
  serves, or null for a spare) to the secret of an agent started as a spare, claimed
  since or not; 401 to anything else (an agent started as no spare has no secret).
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from sandbox_agent.agent import Agent
from sandbox_agent.claim import Claim, ClaimState
from sandbox_agent.errors import AgentError, Conflict
from sandbox_agent.protocol import CLAIM_SECRET_HEADER, Event
from sandbox_agent.routes import ERRORS, get_agent, json_raw
from sandbox_agent.routes.decl import Depends, Router

router = Router(tags=["system"], responses=ERRORS)


class WrongClaimSecret(AgentError):
    status_code = 401


@router.post(
    "/claim",
    status_code=201,
    response_model=Event,
    responses={409: {"description": "Claimed already"}},
    summary="Hand a spare its conversation (the gateway's pool only)",
)
async def claim(body: Claim, request: Request, agent: Agent = Depends(get_agent)) -> Response:
    secret = agent.pool_secret
    given = request.headers.get(CLAIM_SECRET_HEADER)
    if not agent.spare:
        raise Conflict("this sandbox was claimed already")
    if secret is None or given is None or not hmac.compare_digest(given.encode(), secret.encode()):
        raise WrongClaimSecret(f"missing or wrong {CLAIM_SECRET_HEADER}")
    stored = await agent.claim(body)
    return json_raw(stored.raw, 201)


@router.get(
    "/claim",
    response_model=ClaimState,
    summary="Whether a spare was claimed, and for what (the gateway's runtime only)",
)
async def claim_state(request: Request, agent: Agent = Depends(get_agent)) -> Response:
    secret = agent.pool_secret
    given = request.headers.get(CLAIM_SECRET_HEADER)
    if secret is None or given is None or not hmac.compare_digest(given.encode(), secret.encode()):
        raise WrongClaimSecret(f"missing or wrong {CLAIM_SECRET_HEADER}")
    state = ClaimState(claim=await agent.claim_state())
    return json_raw(state.model_dump_json().encode(), 200)
