"""The spares one pool holds (gateway/pool_spares.py): taken once, never ready again after being
handed out, and bounded in all by ``pool_max_spares``."""

from __future__ import annotations

from uuid import uuid4

from gateway.pool_refill import spare_spec
from gateway.pool_spares import Spares
from gateway.runtimes.base import SandboxHandle, SandboxState


def spare(key: str = "default") -> SandboxHandle:
    return SandboxHandle(spec=spare_spec(key), base_url="http://127.0.0.1:1", state=SandboxState.RUNNING)


def test_a_spare_is_taken_once_in_the_order_it_was_made() -> None:
    spares = Spares({"default": 2, "none": 0}, max_spares=10)
    assert spares.keys == ["default"]
    first, second = spare(), spare()
    spares.add("default", first)
    spares.add("default", second)
    assert spares.take("default") is first
    assert spares.handed_out(first.conversation_id)
    assert spares.ready_ids() == {second.conversation_id}
    assert spares.take("default") is second
    assert spares.take("default") is None and spares.take("none") is None


def test_what_is_missing_counts_starts_and_keeps_within_the_bound() -> None:
    spares = Spares({"default": 2, "ci": 2}, max_spares=3)
    assert spares.missing("default") == 2
    spares.starting[uuid4()] = "default"
    spares.add("ci", spare("ci"))
    assert spares.missing("default") == 1
    spares.add("ci", spare("ci"))
    assert spares.missing("default") == 0  # three held: the bound on all spares
    assert spares.missing("ci") == 0


def test_a_spare_handed_out_elsewhere_leaves_and_clear_empties() -> None:
    spares = Spares({"default": 2}, max_spares=10)
    claimed_elsewhere, kept = spare(), spare()
    spares.add("default", claimed_elsewhere)
    spares.add("default", kept)
    spares.hand_out(claimed_elsewhere.conversation_id)
    assert spares.handed_out(claimed_elsewhere.conversation_id)
    assert spares.ready_ids() == {kept.conversation_id}
    assert spares.clear() == [kept]
    assert spares.ready_count() == 0
