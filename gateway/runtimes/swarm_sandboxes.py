"""Reading the swarm: the installation's services, their tasks, nodes and configs, as handles.

One listing is four concurrent manager calls (services, tasks, nodes, configs), whatever the
number of conversations; specs are cached by service id (a service is never
updated, so its spec never changes), claims by conversation once read.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from gateway.runtimes import docker_config as cfg
from gateway.runtimes import swarm_config as scfg
from gateway.runtimes import swarm_state
from gateway.runtimes.base import SandboxHandle, SandboxSpec, SandboxState
from gateway.runtimes.claiming import claimed_spec
from gateway.runtimes.docker_engine import conversation_of, young
from gateway.runtimes.swarm_engine import SwarmEngine
from sandbox_agent.claim import Claim

#: Seconds a sandbox service may stand without its relay before that counts as lost:
#: another gateway's start makes the relay once the sandbox's task is placed.
RELAY_GRACE = 60.0


@dataclass
class World:
    """One reading of the swarm for a set of conversations."""

    services: dict[UUID, dict[str, dict[str, Any]]]  # conversation -> role -> service
    tasks: dict[str, list[dict[str, Any]]]  # service id -> its tasks
    nodes: dict[str, dict[str, Any]]  # node id -> node
    configs: dict[UUID, dict[str, bytes]] = field(default_factory=dict)  # conversation -> kind -> data


async def read_world(engine: SwarmEngine, filters: dict[str, list[str]]) -> World:
    # Tasks match their service's labels: one call, and no race with a service removed meanwhile.
    services, tasks, nodes, configs = await asyncio.gather(
        engine.services(filters),
        engine.tasks(filters),
        engine.nodes(),
        engine.configs(_config_filter(filters)),
    )
    world = World({}, {}, {node["ID"]: node for node in nodes})
    for service in services:
        labels = (service.get("Spec") or {}).get("Labels") or {}
        conversation, role = conversation_of(labels), labels.get(cfg.ROLE)
        if conversation is not None and role in (cfg.SANDBOX, cfg.RELAY):
            world.services.setdefault(conversation, {})[role] = service
    for task in tasks:
        world.tasks.setdefault(task.get("ServiceID", ""), []).append(task)
    for config in configs:
        spec = config.get("Spec") or {}
        conversation = conversation_of(spec.get("Labels"))
        kind = (spec.get("Labels") or {}).get(scfg.KIND)
        if conversation is not None and kind:
            world.configs.setdefault(conversation, {})[kind] = base64.b64decode(spec.get("Data") or "")
    return world


def _config_filter(filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """The configs of the same conversations: their labels, less the role (configs have none)."""
    return {"label": [label for label in filters["label"] if not label.startswith(cfg.ROLE)]}


class HandleReader:
    """Turns a :class:`World` into handles; keeps the caches of specs and claims."""

    def __init__(self, reach: str, reach_network: str) -> None:
        self.reach = reach
        self.reach_network = reach_network
        self.specs: dict[str, SandboxSpec] = {}  # by sandbox service id
        self.claimed: dict[UUID, SandboxSpec] = {}  # claimed spares, by conversation
        #: The conversations the last listing showed EXITED: the only ones cleanup_orphans()
        #: removes as ended, so a caller always learns why one ended before it goes (a
        #: sandbox whose node is lost between a listing and the clean-up stays for the next).
        self.listed_exited: set[UUID] = set()

    def handles(self, world: World, starting: set[UUID]) -> list[SandboxHandle]:
        found = (self.handle(world, conversation, starting) for conversation in world.services)
        handles = [handle for handle in found if handle is not None]
        self.listed_exited = {h.conversation_id for h in handles if h.state is SandboxState.EXITED}
        return handles

    def handle(self, world: World, conversation: UUID, starting: set[UUID]) -> SandboxHandle | None:
        group = world.services.get(conversation) or {}
        sandbox, relay = group.get(cfg.SANDBOX), group.get(cfg.RELAY)
        if sandbox is None:
            return None
        spec = self._spec(sandbox, world.configs.get(conversation) or {})
        if spec is None:
            return None
        sandbox_tasks = world.tasks.get(sandbox["ID"], [])
        relay_tasks = world.tasks.get(relay["ID"], []) if relay else None
        if relay is None and (conversation in starting or young(sandbox.get("CreatedAt"), RELAY_GRACE)):
            relay_tasks = []  # its start is still to make the relay
        seen = swarm_state.seen(sandbox_tasks, relay_tasks, world.nodes)
        base_url = self.url(relay, world) or ""
        if seen.state is SandboxState.EXITED:
            return SandboxHandle(spec, base_url, seen.state, exit_code=seen.exit_code, reason=seen.reason)
        if seen.state is SandboxState.RUNNING and "paused" in (world.configs.get(conversation) or {}):
            return SandboxHandle(spec, base_url, SandboxState.PAUSED)  # swarm_lifecycle froze it
        return SandboxHandle(spec, base_url, seen.state)

    def _spec(self, sandbox: dict[str, Any], configs: dict[str, bytes]) -> SandboxSpec | None:
        spec = self.specs.get(sandbox["ID"])
        if spec is None:
            token = configs.get("token", b"").decode(errors="replace").strip()
            spec = scfg.spec_from_service(sandbox, token)
            if spec is None:
                return None
            self.specs[sandbox["ID"]] = spec
        if spec.pool is None:
            return spec
        known = self.claimed.get(spec.conversation_id)
        if known is not None:
            return known
        try:
            claim = Claim.model_validate_json(configs["claim"]) if "claim" in configs else None
        except ValueError:
            claim = None
        if claim is None or claim.conversation_id != spec.conversation_id:
            return spec
        self.claimed[spec.conversation_id] = claimed_spec(spec, claim)
        return self.claimed[spec.conversation_id]

    def url(self, relay: dict[str, Any] | None, world: World) -> str | None:
        """How the gateway reaches the relay: its node's address and published port, or its
        address on the reach network."""
        task = swarm_state.latest(world.tasks.get(relay["ID"], [])) if relay else None
        if relay is None or task is None:
            return None
        if self.reach == "published":
            port = scfg.published_port(relay)
            node = world.nodes.get(str(task.get("NodeID") or ""))
            address = swarm_state.node_address(node) if node else None
            return f"http://{address}:{port}" if address and port else None
        address = scfg.task_address(task, self.reach_network)
        return f"http://{address}:{cfg.AGENT_PORT}" if address else None
