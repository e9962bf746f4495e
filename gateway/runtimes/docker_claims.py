"""What a Docker sandbox's agent keeps that its labels cannot say: its token, and what a spare
became (mixed into :class:`~gateway.runtimes.docker_handles.DockerHandles`).

Labels are immutable, so a claimed spare is still labelled a spare. Every listing learns, for
each spare whose claim it does not know yet, whether it was claimed (through this gateway,
another one of the installation, or before a restart) and by what: from the agent itself
(``GET /claim`` over its socket, a millisecond or two: :meth:`Claimer.ask`), else, where the
agent does not answer (paused, booting, stopped, or too old to know the question), from the
claim file it keeps in its volume (read by the engine: tens of milliseconds). A claim once
learned is kept: a claimed sandbox never becomes a spare again.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from gateway.errors import EngineError
from gateway.runtimes import docker_config as cfg
from gateway.runtimes import docker_token
from gateway.runtimes.base import SandboxSpec
from gateway.runtimes.claiming import Claimer, claimed_spec
from gateway.runtimes.docker_engine import Engine, quietly
from gateway.runtimes.docker_sockets import SocketDirs
from sandbox_agent.claim import Claim


def without_network(summary: dict[str, Any]) -> bool:
    """Whether a sandbox container (summary or inspect ``Config``) runs with no network (no relay)."""
    labels = summary.get("Labels") or (summary.get("Config") or {}).get("Labels") or {}
    return bool(labels.get(cfg.NETWORK) == cfg.NO_NETWORK)


class DockerClaims:
    """The token and the claim of a sandbox, as its agent keeps them."""

    _engine: Engine
    _sockets: SocketDirs
    _claimed: dict[UUID, SandboxSpec]
    _claimer: Claimer

    async def _claimed_spec(
        self, sandbox: dict[str, Any], spare: SandboxSpec, url: str | None
    ) -> SandboxSpec:
        """The spec of a spare's container (its summary ``sandbox``, its agent at ``url``): the
        conversation's once claimed, else the spare's. Only a running agent is asked (a paused
        one would not answer before the timeout)."""
        known = self._claimed.get(spare.conversation_id)
        if known is not None:
            return known
        answer = None
        if url and spare.token and sandbox.get("State") == "running":
            answer = await self._claimer.ask(url, spare.token)
        claim = answer.claim if answer is not None else await self._kept_claim(sandbox["Id"])
        if claim is None or claim.conversation_id != spare.conversation_id:
            return spare
        spec = claimed_spec(spare, claim)
        self._claimed[spare.conversation_id] = spec
        return spec

    async def _kept_claim(self, container: str) -> Claim | None:
        """The claim in the agent's claim file. An engine that does not answer fails the listing
        (which changes nothing) rather than make a claimed sandbox look like a spare; a refusal
        (a container being removed) reads as no claim: the pool adopts or removes only agents
        that answer as spares themselves."""
        try:
            data = await self._engine.read_file(container, docker_token.CLAIM_FILE)
        except EngineError:
            data = None
        try:
            return Claim.model_validate_json(data) if data else None
        except ValueError:
            return None

    async def _token(self, sandbox: dict[str, Any], names: cfg.Names) -> str | None:
        """The token of ``sandbox``: handed over in its socket directory while its first boot is
        under way (one with no network), else in its volume (read by the engine, whatever the
        file's owner)."""
        if without_network(sandbox):
            handed = await self._sockets.handed_token(names)
            if handed is not None:
                return handed
        data = await quietly(self._engine.read_file(sandbox["Id"], docker_token.TOKEN_FILE))
        token = data.decode(errors="replace").strip() if data else ""
        return token or None  # None: a sandbox of an older gateway, whose token is in its environment
