"""The limits' second check (gateway.limits.must_yield) against random schedules of concurrent
creates on several gateways: never more than the limit survive, whatever the order in which
starts are registered and checked; the naive rule (yield when ``limit`` older ones are listed)
lets more survive, which is why the rule defers to more than the older ones."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from gateway import limits
from gateway.limits import Entry

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Create:
    entry: Entry
    registered: float  # seconds: when the runtime lists it
    checked: float  # when its gateway lists the installation again (after it saw it registered)


def schedule(rng: random.Random, count: int) -> list[Create]:
    creates = []
    for n in range(count):
        made = rng.uniform(0, 1)
        registered = made + rng.expovariate(1 / rng.choice([0.01, 0.1, 0.5]))  # slow engines too
        entry = Entry(UUID(int=n + 1), rng.choice(["alice", "bob"]), EPOCH + timedelta(seconds=made))
        creates.append(Create(entry, registered, registered + rng.expovariate(1 / 0.05)))
    return creates


def survivors(creates: list[Create], rule: limits.YieldRule, limit: int) -> int:
    """Checks in time order; a listing shows what is registered and has not yielded."""
    alive = {create.entry.conversation_id for create in creates}
    for create in sorted(creates, key=lambda c: c.checked):
        listing = [
            other.entry
            for other in creates
            if other.registered <= create.checked and other.entry.conversation_id in alive
        ]
        seen_at = EPOCH + timedelta(seconds=create.registered)
        if rule(create.entry, seen_at, listing, limit, 0.0):
            alive.discard(create.entry.conversation_id)
    return len(alive)


def older_only(me: Entry, seen_at: datetime, others: list[Entry], limit: int, margin: float) -> bool:
    return sum(1 for other in others if other.key < me.key) >= limit


def worst_overshoot(rule: limits.YieldRule) -> int:
    worst = 0
    for seed in range(3000):
        rng = random.Random(seed)
        limit = rng.choice([1, 2, 3, 5])
        worst = max(worst, survivors(schedule(rng, rng.choice([2, 4, 8, 12])), rule, limit) - limit)
    return worst


def test_never_more_than_the_limit_survive_concurrent_creates() -> None:
    assert worst_overshoot(limits.must_yield) <= 0


def test_deferring_to_the_older_ones_only_would_let_more_survive() -> None:
    assert worst_overshoot(older_only) > 0


def test_far_from_the_limit_nobody_yields() -> None:
    rng = random.Random(7)
    creates = schedule(rng, 6)
    assert survivors(creates, limits.must_yield, 10) == 6
