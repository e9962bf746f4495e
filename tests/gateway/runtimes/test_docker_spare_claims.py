"""What a Docker listing learns of its spares without Docker (gateway/runtimes/docker_claims.py),
on a FakeEngine whose agents answer ``/ready`` alone (as an agent too old to know ``GET /claim``):
a sandbox the runtime started itself is known from its config (its first listing inspects
nothing and reads no token), and a spare whose agent does not answer the question is read
from its claim file, by the runtime that made it and by another one of the installation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fake_docker import fake_sandboxes
from fake_engine import FakeEngine

from gateway.pool_refill import spare_spec
from gateway.runtimes import docker_config as cfg
from gateway.runtimes.docker_token import CLAIM_FILE
from sandbox_agent.claim import Claim


async def test_a_sandbox_started_here_is_listed_with_no_inspect_and_no_token_read(
    engine: FakeEngine, tmp_path: Path
) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    started = await runtime.start(spare_spec("default"))
    engine.calls.clear()
    (listed,) = await runtime.list()
    assert listed.spec == started.spec
    methods = [method for method, _ in engine.calls]
    assert "inspect" not in methods, methods
    # A spare's claim is asked of its agent; this fake one does not know the question: the
    # claim file is read, and nothing else.
    assert methods.count("read_file") == 1, methods


async def test_the_claim_file_answers_for_an_agent_that_does_not(engine: FakeEngine, tmp_path: Path) -> None:
    runtime = fake_sandboxes(engine, tmp_path)
    spare = await runtime.start(spare_spec("default"))
    (listed,) = await runtime.list()
    assert listed.spec.pool == "default", "no claim yet: a spare"

    claim = Claim(
        conversation_id=spare.conversation_id,
        token="the-conversation-token-0123",
        owner="alice",
        title="claimed elsewhere",
        created_at=datetime.now(UTC),
    )
    container = engine.containers_by_name[cfg.Names.of("fake", spare.conversation_id).sandbox]
    container.files[CLAIM_FILE] = claim.model_dump_json().encode()  # as its agent keeps it
    other = fake_sandboxes(engine, tmp_path)  # another gateway's runtime: it knows nothing yet
    for each in (runtime, other):
        (handle,) = await each.list()
        assert handle.spec.pool is None, "claimed: a conversation now"
        assert (handle.spec.owner, handle.spec.title, handle.spec.token) == (
            "alice",
            "claimed elsewhere",
            claim.token,
        )
